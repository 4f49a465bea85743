"""Shared pieces of the sink tests: a ``flocklog serve`` process, stamped writer processes, the exactly-once check."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from flocklog.errors import HubError
from flocklog.hub import query_status
from flocklog.stamps import parse_stamp

FORMAT = "%(message)s"


def write_config(tmp_path: Path, handlers: dict[str, dict[str, Any]]) -> Path:
    config = {"version": 1, "handlers": handlers, "root": {"level": "DEBUG", "handlers": list(handlers)}}
    path = tmp_path / "hub.json"
    path.write_text(json.dumps(config))
    return path


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def start_serve(config: Path | None, sock: Path, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    """``flocklog serve`` with its stdout on a pipe (the reader is the caller), up when its socket answers."""
    options = ["--config", str(config)] if config is not None else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "flocklog.cli", "serve", *options, "--unix", str(sock), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def up() -> bool:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            query_status(f"unix:{sock}", timeout=1.0)
        except HubError:
            return False
        return True

    wait_for(up, 60, "flocklog serve to listen")
    return proc


def hub_status(sock: Path) -> dict[str, Any]:
    return query_status(f"unix:{sock}", timeout=5.0)


def start_writers(
    address: str, env: dict[str, str], spool: Path, run: str, n: int, count: int, pause: float = 0.0, prefix: str = "w"
) -> list[subprocess.Popen[str]]:
    """``n`` stamped writer processes logging through ``flocklog.HubHandler`` (``--format %(message)s``)."""
    env = dict(env, FLOCKLOG_HUB_ADDRESS=address, FLOCKLOG_HUB_SPOOL_DIR=str(spool))
    kwargs = json.dumps({"when_full": "block", "retry_interval": 0.1, "drain_timeout": 60})
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flocklog.stamps",
                "--handler",
                "flocklog.HubHandler",
                "--kwargs",
                kwargs,
                "--run",
                run,
                "--writer",
                f"{prefix}{i}",
                "--count",
                str(count),
                "--pause",
                str(pause),
                "--payload-size",
                "16",
                "--format",
                FORMAT,
            ],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]


def finish(procs: Iterable[subprocess.Popen[str]], timeout: float = 180) -> list[int]:
    """Wait for writer processes; each prints how many records it logged."""
    counts = []
    for proc in procs:
        out, _ = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, out
        counts.append(int(out.strip().splitlines()[-1]))
    return counts


class LineReader:
    """Reads a pipe on a thread into a list: the process under test never blocks on a full pipe."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream: Any) -> None:
        for line in stream:
            with self._lock:
                self.lines.append(line)

    def count(self, run: str) -> int:
        with self._lock:
            return sum(1 for line in self.lines if run in line)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.lines)


def check_exactly_once(messages: Iterable[str], *, run: str, writers: dict[str, int]) -> None:
    """Every ``(writer, seq)`` of ``run`` exactly once: no loss, no duplicate, no torn stamp."""
    seen: collections.Counter[tuple[str, int]] = collections.Counter()
    torn = 0
    for message in messages:
        if run not in message:
            continue
        stamp = parse_stamp(message.rstrip("\n"))
        if stamp is None or stamp.run != run:
            torn += 1
            continue
        seen[(stamp.writer, stamp.seq)] += 1
    expected = {(w, s) for w, n in writers.items() for s in range(n)}
    lost = expected - set(seen)
    dups = {k: v for k, v in seen.items() if v > 1}
    extra = set(seen) - expected
    assert (len(lost), len(dups), len(extra), torn) == (0, 0, 0, 0), (
        f"lost={len(lost)} (e.g. {sorted(lost)[:5]}) duplicated={len(dups)} (e.g. {list(dups.items())[:5]}) "
        f"unexpected={len(extra)} torn={torn}"
    )
