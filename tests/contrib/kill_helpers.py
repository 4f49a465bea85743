"""The SIGKILL-mid-run tests' shared machinery: a bounded load, its receipts, the kill, the respawn, the verdict.

Every deployment test follows the same script (:func:`run_kill_scenario`): load the server until the size-rotated
set has archives, SIGKILL one worker that has been writing, wait for the master's replacement to write too, load
on until more rotations happened, stop, and check the set with ``flocklog verify --expect-file`` built from the
receipts: the answers the client actually received (HTTP 200), or the task's own note pushed to Redis after its
records were written. Records of a request cut by the kill have no receipt and so are not expected.
All waits are on conditions (archive counts, pids in the log), never on time.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from contrib_helpers import Server, wait_until

from flocklog.stamps import parse_stamp

CONTRIB_TESTS = Path(__file__).resolve().parent
RECORDS_PER_WRITER = 4
PAYLOAD = 200  # bytes: ~330-byte lines, so ~50 records (a dozen requests) fill a file of MAX_BYTES
MAX_BYTES = 16384
ARCHIVES_BEFORE_KILL = 3
ARCHIVES_AFTER_RESPAWN = 5  # rotations the new worker's life must add
WAIT = 180.0  # generous: a loaded 2-core machine runs four other suites beside this one


class Load(Protocol):
    failures: Counter[str]  # what went wrong on the client side, by kind; no receipt for any of them

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def expected(self) -> dict[str, int]: ...
    def summary(self) -> str: ...


class HttpLoad:
    """``threads`` clients on loopback, one new connection per request, each request a writer of its own.

    New connections let the kernel hand requests to every worker (kept-alive ones pin a client to one). Bounded by
    ``limit`` requests whatever the test waits for.
    """

    def __init__(self, port: int, run: str, *, threads: int = 4, limit: int = 50_000) -> None:
        self.port, self.run, self.threads, self.limit = port, run, threads, limit
        self.receipts: list[str] = []
        self.failures: Counter[str] = Counter()
        self._sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def start(self) -> None:
        self._workers = [threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(self.threads)]
        for thread in self._workers:
            thread.start()

    def _client(self, index: int) -> None:
        number = 0
        while not self._stop.is_set():
            with self._lock:
                if self._sent >= self.limit:
                    return
                self._sent += 1
            writer = f"c{index}r{number}"
            number += 1
            path = f"/?run={self.run}&writer={writer}&n={RECORDS_PER_WRITER}&size={PAYLOAD}"
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT)
            try:
                connection.request("GET", path, headers={"Connection": "close"})
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    self.receipts.append(writer)
                else:
                    self.failures[f"HTTP {response.status}"] += 1
            except (OSError, http.client.HTTPException) as exc:  # a request cut by the kill: no receipt
                self.failures[type(exc).__name__] += 1
            finally:
                connection.close()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(WAIT)

    def expected(self) -> dict[str, int]:
        return dict.fromkeys(self.receipts, RECORDS_PER_WRITER)

    def summary(self) -> str:
        return f"{self._sent} requests, {len(self.receipts)} answered 200, failures {dict(self.failures)}"


class CeleryLoad:
    """One producer keeping ``window`` tasks outstanding; each task a writer, its receipt a Redis list entry.

    The task pushes its writer id to ``receipts:<run>`` only after its records were written (hub mode: after its
    client drained), so a child SIGKILLed in the middle of a task leaves that task without a receipt.
    """

    def __init__(self, broker: str, run: str, *, window: int = 16, limit: int = 50_000) -> None:
        import redis

        self.broker, self.run, self.window, self.limit = broker, run, window, limit
        self.failures: Counter[str] = Counter()
        self._redis = redis.Redis.from_url(broker)
        self._key = f"receipts:{run}"
        self._sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _produce(self) -> None:
        from celery import Celery

        client = Celery("flk_kill_client", broker=self.broker)
        with client.connection_for_write() as conn:
            producer = client.amqp.Producer(conn)
            while not self._stop.is_set() and self._sent < self.limit:
                if self._sent - int(self._redis.llen(self._key)) >= self.window:
                    self._stop.wait(0.005)  # pacing only: the window bounds the queue, nothing is timed
                    continue
                args = [self.run, f"t{self._sent}", RECORDS_PER_WRITER, PAYLOAD]
                client.send_task("flk.kill", args=args, producer=producer)
                self._sent += 1

    def stop(self) -> None:
        """Stop sending, then let the worker take every queued task: a warm shutdown with messages still
        reserved spends ~30 s requeuing them (kombu's Redis transport), which says nothing about logging."""
        self._stop.set()
        self._thread.join(WAIT)
        wait_until(
            lambda: not self._redis.llen("celery") and not self._redis.hlen("unacked"),
            WAIT,
            "the queue to empty",
            self.summary,
        )

    def expected(self) -> dict[str, int]:
        receipts = [item.decode() for item in self._redis.lrange(self._key, 0, -1)]
        if len(receipts) != len(set(receipts)):
            self.failures["a task ran twice"] += 1
        return dict.fromkeys(receipts, RECORDS_PER_WRITER)

    def summary(self) -> str:
        return f"{self._sent} tasks sent, {self._redis.llen(self._key)} receipts, failures {dict(self.failures)}"


def archives(log_file: Path) -> int:
    """Numbered archives ``app.log.N`` of the set: the rotations that happened (nothing expires at backupCount 1000)."""
    prefix = log_file.name + "."
    return sum(1 for p in log_file.parent.iterdir() if p.name.startswith(prefix) and p.name[len(prefix) :].isdigit())


def writing_pids(log_file: Path, run: str) -> set[int]:
    """Processes whose stamped records of ``run`` are in the set (the ``[PID:n`` of each formatted line)."""
    pids: set[int] = set()
    for path in log_file.parent.glob(log_file.name + "*"):
        if path.name.endswith(".lock"):
            continue
        with contextlib.suppress(OSError):
            for line in path.read_text("utf-8", errors="replace").splitlines():
                if "[PID:" in line and parse_stamp(line) is not None and f" {run} " in line:
                    pids.add(int(line.split("[PID:")[1].split(",")[0].split("]")[0]))
    return pids


def children_of(pid: int) -> set[int]:
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


@dataclass
class Outcome:
    """What a scenario saw: the verdict of ``flocklog verify`` and the facts the assertions need."""

    report: dict[str, Any]
    returncode: int
    victim: int
    replacement: int
    expected: dict[str, int]
    load: str
    failures: dict[str, int] = field(default_factory=dict)

    def defects(self) -> dict[str, int]:
        keys = ("lost", "duplicated", "torn", "missing_writers", "undersized_archives", "same_second_rotations")
        keys += ("excess_archives", "missing_archives", "unreadable")
        return {key: self.report[key] for key in keys}


def verify_cli(log_file: Path, run: str, expected: dict[str, int], max_bytes: int) -> tuple[int, dict[str, Any]]:
    """``flocklog verify --json`` with the per-writer expectations in an ``--expect-file``, as a user runs it."""
    expect_file = log_file.parent.parent / f"expect-{run}.json"
    expect_file.write_text(json.dumps(expected))
    args = [sys.executable, "-m", "flocklog", "verify", str(log_file), "--run", run, "--json"]
    args += ["--expect-file", str(expect_file), "--max-bytes", str(max_bytes), "--backup-count", "1000"]
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=WAIT)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        raise AssertionError(f"verify printed no JSON (rc {done.returncode}):\n{done.stdout}\n{done.stderr}") from None
    return done.returncode, report


def run_kill_scenario(
    server: Server,
    log_file: Path,
    run: str,
    load: Load,
    *,
    master: int | None = None,
    stop: Callable[[], None] | None = None,
    max_bytes: int = MAX_BYTES,
) -> Outcome:
    """Load, SIGKILL a writing worker of ``master`` (default: the server process), wait for its replacement to
    write, load through more rotations, stop the server (``stop``, default SIGTERM and a clean exit) and verify."""
    master = server.proc.pid if master is None else master

    def alive() -> None:
        if server.proc.poll() is not None:
            raise AssertionError(f"the server exited with {server.proc.returncode}\n{server.output()}")

    def context() -> str:
        return f"{load.summary()}, archives {archives(log_file)}\n{server.output()}"

    phases = [time.monotonic()]  # reported, never asserted: where a slow run spent its time
    load.start()
    try:
        wait_until(lambda: (alive(), archives(log_file) >= ARCHIVES_BEFORE_KILL)[1], WAIT, "rotations", context)
        candidates: set[int] = set()

        def writing_workers() -> bool:
            alive()
            candidates.update(writing_pids(log_file, run) & children_of(master))
            return bool(candidates)

        phases.append(time.monotonic())
        wait_until(writing_workers, WAIT, "a worker writing records", context)
        victim = min(candidates)
        workers_before = children_of(master)
        os.kill(victim, signal.SIGKILL)
        replacements: set[int] = set()

        def replaced() -> bool:
            # A process the master started after the kill, writing: not a sibling that was merely idle before.
            alive()
            replacements.update(writing_pids(log_file, run) & (children_of(master) - workers_before))
            return bool(replacements)

        wait_until(replaced, WAIT, f"a new worker (after SIGKILL of {victim}) to write records", context)
        phases.append(time.monotonic())
        at_respawn = archives(log_file)
        wait_until(
            lambda: (alive(), archives(log_file) >= at_respawn + ARCHIVES_AFTER_RESPAWN)[1],
            WAIT,
            "rotations after the respawn",
            context,
        )
    finally:
        phases.append(time.monotonic())
        load.stop()
    if stop is None:
        assert server.terminate(WAIT) == 0, server.output()
    else:
        stop()
    phases.append(time.monotonic())
    expected = load.expected()
    returncode, report = verify_cli(log_file, run, expected, max_bytes)
    print(  # shown by pytest when a test fails, and with -s
        f"killed {victim}, replaced by {sorted(replacements)}; {load.summary()}; verify rc {returncode}:"
        f" {report['records']} records, {report['archives']} archives, lost {report['lost']},"
        f" duplicated {report['duplicated']}, torn {report['torn']}, problems {report['problems'][:3]};"
        f" phases {[round(b - a, 1) for a, b in itertools.pairwise(phases)]} s"
    )
    return Outcome(report, returncode, victim, min(replacements), expected, load.summary(), dict(load.failures))


def assert_nothing_lost(outcome: Outcome, *, client_threads: int = 4) -> None:
    """flocklog's verdict after the kill: every receipted record once, nothing torn, one rotation per boundary."""
    report = outcome.report
    shown = {k: report[k] for k in ("records", "archives", "lost", "duplicated", "torn", "problems", "notes")}
    detail = f"{outcome.load}\n{json.dumps(shown, indent=1)[:4000]}"
    assert outcome.returncode == 0 and report["ok"], detail
    assert not any(outcome.defects().values()), detail
    assert report["records"] >= sum(outcome.expected.values()), detail
    assert report["archives"] >= ARCHIVES_BEFORE_KILL + ARCHIVES_AFTER_RESPAWN, detail
    # The kill cuts at most the requests in flight then, one per client thread; an error answer is a bug.
    assert not any(kind.startswith("HTTP") for kind in outcome.failures), detail
    assert sum(outcome.failures.values()) <= client_threads, detail


def assert_stdlib_fails(outcome: Outcome) -> None:
    """The stdlib's set from the same deployment: ``flocklog verify`` must refuse it (exit 1, defects named)."""
    report = outcome.report
    shown = {k: report[k] for k in ("records", "archives", "lost", "duplicated", "torn", "problems")}
    assert outcome.returncode == 1 and not report["ok"], f"verify passed the stdlib's set: {shown}"
    assert any(outcome.defects().values()), shown
