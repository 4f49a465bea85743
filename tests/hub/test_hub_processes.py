"""The hub under real processes: fork, spawn and separately started writers, forked children, exits by SIGTERM."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path

from hubwriters import FORMAT, check, make_handler, stamped_writer

from flocklog.hub import start_hub
from flocklog.stamps import stamped_logger, write_stamped

PER_WRITER = 2500


def test_eight_writers_by_fork_spawn_and_separate_interpreters_are_written_exactly_once(
    tmp_path: Path, run_id: str, subprocess_env: dict[str, str]
) -> None:
    log_path = tmp_path / "hub.log"
    spool = str(tmp_path / "spool")
    file_handler = logging.FileHandler(log_path)
    hub = start_hub([file_handler])
    try:
        procs = [
            multiprocessing.get_context(method).Process(
                target=stamped_writer, args=(hub.address, spool, run_id, f"{method}{i}", PER_WRITER)
            )
            for method in ("fork", "spawn")
            for i in range(3)
        ]
        for proc in procs:
            proc.start()
        env = dict(subprocess_env, FLOCKLOG_HUB_ADDRESS=hub.address, FLOCKLOG_HUB_SPOOL_DIR=spool)
        kwargs = json.dumps({"when_full": "block"})
        interpreters = [
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
                    run_id,
                    "--writer",
                    f"sep{i}",
                    "--count",
                    str(PER_WRITER),
                    "--format",
                    FORMAT,
                ],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        for proc in procs:
            proc.join(120)
            assert proc.exitcode == 0, proc
        for popen in interpreters:
            out, _ = popen.communicate(timeout=120)
            assert popen.returncode == 0 and out.strip() == str(PER_WRITER)
        status = hub.status()
    finally:
        hub.stop()
        file_handler.close()
    check(log_path, run=run_id, writers=8, per_writer=PER_WRITER)
    assert status["records_written"] == 8 * PER_WRITER
    assert status["malformed"] == status["duplicate_batches"] == 0
    assert not list(Path(spool).glob("*.spool")), "everything was delivered, nothing may stay spooled"


def test_forked_child_keeps_logging_and_cannot_stop_the_parents_hub(tmp_path: Path, run_id: str) -> None:
    log_path = tmp_path / "hub.log"
    file_handler = logging.FileHandler(log_path)
    hub = start_hub([file_handler])
    handler = make_handler(hub.address, str(tmp_path / "spool"))
    parent_logger = stamped_logger("hubtest.parent", handler)
    halfway = threading.Event()

    def parent_writes() -> None:
        write_stamped(
            parent_logger,
            run=run_id,
            writer="parent",
            count=3000,
            payload_size=16,
            on_record=lambda n: halfway.set() if n == 1500 else None,
        )

    def child() -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hub.stop()  # the inherited Hub object: must only warn
        if not any(issubclass(w.category, RuntimeWarning) for w in caught):
            os._exit(3)
        # the inherited handler starts fresh in the child: new client id, new thread, empty buffer
        write_stamped(stamped_logger("hubtest.child", handler), run=run_id, writer="child", count=2000, payload_size=16)
        # no explicit close: multiprocessing's exit path (no atexit) must still drain the handler

    try:
        writer = threading.Thread(target=parent_writes)
        writer.start()
        halfway.wait(30)
        proc = multiprocessing.get_context("fork").Process(target=child)
        proc.start()  # forked while the parent's writer thread and sender thread are busy
        proc.join(60)
        writer.join(60)
        assert proc.exitcode == 0
        write_stamped(parent_logger, run=run_id, writer="after", count=500, payload_size=16)
        assert handler.drain(30)
        status = hub.status()
        assert status["running"] and status["pid"] == os.getpid()
    finally:
        handler.close()
        hub.stop()
        file_handler.close()
    report = check_counts(log_path, run_id, {"parent": 3000, "child": 2000, "after": 500})
    assert report


def check_counts(path: Path, run: str, counts: dict[str, int]) -> bool:
    from flocklog.verify import VerifyOptions, verify_paths

    report = verify_paths(
        [str(path)], VerifyOptions(expected_counts=counts, writers=len(counts), run=run, allow_expired=False)
    )
    assert report.records == sum(counts.values()), report.to_dict()
    assert (report.lost, report.duplicated, report.torn) == (0, 0, 0), report.to_dict()
    return report.ok


SIGTERM_WRITER = """
import logging, sys, time
from flocklog import HubHandler
from flocklog.stamps import stamped_logger, write_stamped
handler = HubHandler(when_full="block")
handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
n = write_stamped(stamped_logger("t", handler), run=sys.argv[1], writer=sys.argv[2], count=int(sys.argv[3]))
print("done", handler.stats()["buffered"], flush=True)
# Short sleeps, not one sleep(60): CPython runs a signal's handler when a system call returns EINTR, so a SIGTERM
# landing between the last check and the start of the sleep's system call waited for the whole sleep (seen: the
# writer still asleep 30 s after SIGTERM, about once in 140 runs on a busy machine).
deadline = time.monotonic() + 60
while sys.argv[4] == "wait" and time.monotonic() < deadline:
    time.sleep(0.05)
"""


def test_clients_exiting_normally_or_by_sigterm_deliver_everything_emitted_before_exit(
    tmp_path: Path, run_id: str, subprocess_env: dict[str, str]
) -> None:
    log_path = tmp_path / "hub.log"
    file_handler = logging.FileHandler(log_path)
    hub = start_hub([file_handler])
    env = dict(subprocess_env, FLOCKLOG_HUB_ADDRESS=hub.address, FLOCKLOG_HUB_SPOOL_DIR=str(tmp_path / "spool"))
    count = 20000
    try:
        procs = {
            mode: subprocess.Popen(
                [sys.executable, "-c", SIGTERM_WRITER, run_id, mode, str(count), "wait" if mode == "term" else "exit"],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            for mode in ("term", "normal")
        }
        term = procs["term"]
        assert term.stdout is not None
        assert term.stdout.readline().startswith("done")
        term.send_signal(signal.SIGTERM)
        assert term.wait(60) == 128 + signal.SIGTERM
        assert procs["normal"].wait(60) == 0
    finally:
        hub.stop()
        file_handler.close()
    check_counts(log_path, run_id, {"term": count, "normal": count})


def _pool_task(run: str, writer: str, count: int) -> int:
    # the logger and its HubHandler were configured in the parent and inherited through fork
    return write_stamped(logging.getLogger("hubtest.pool"), run=run, writer=writer, count=count, payload_size=16)


def test_process_pool_workers_log_through_the_parents_handler_and_drain_at_shutdown(
    tmp_path: Path, run_id: str
) -> None:
    from concurrent.futures import ProcessPoolExecutor

    log_path = tmp_path / "hub.log"
    file_handler = logging.FileHandler(log_path)
    hub = start_hub([file_handler])
    handler = make_handler(hub.address, str(tmp_path / "spool"))
    stamped_logger("hubtest.pool", handler)
    try:
        with ProcessPoolExecutor(max_workers=3, mp_context=multiprocessing.get_context("fork")) as pool:
            done = list(pool.map(_pool_task, [run_id] * 6, [f"task{i}" for i in range(6)], [1500] * 6))
        assert done == [1500] * 6
    finally:
        handler.close()
        hub.stop()
        file_handler.close()
    check(log_path, run=run_id, writers=6, per_writer=1500)


ORPHAN_WRITER = """
import logging, sys
from flocklog import HubHandler
from flocklog.stamps import stamped_logger, write_stamped
handler = HubHandler(drain_timeout=0.3, retry_interval=0.1)
write_stamped(stamped_logger("t", handler), run=sys.argv[1], writer="orphan", count=700)
"""


def test_spool_left_by_a_process_that_exited_while_the_hub_was_down_is_replayed_by_a_later_client(
    tmp_path: Path, run_id: str, subprocess_env: dict[str, str]
) -> None:
    sock, spool, log_path = tmp_path / "hub.sock", tmp_path / "spool", tmp_path / "hub.log"
    env = dict(subprocess_env, FLOCKLOG_HUB_ADDRESS=f"unix:{sock}", FLOCKLOG_HUB_SPOOL_DIR=str(spool))
    subprocess.run([sys.executable, "-c", ORPHAN_WRITER, run_id], env=env, check=True, timeout=60)
    assert len(list(spool.glob("*.spool"))) == 1, "with no hub, everything must be spooled, not dropped"
    file_handler = logging.FileHandler(log_path)
    with start_hub([file_handler], address=f"unix:{sock}") as hub:
        later = make_handler(hub.address, str(spool))
        write_stamped(stamped_logger("hubtest.later", later), run=run_id, writer="later", count=10)
        assert later.drain(30)
        stats = later.stats()
        later.close()
    file_handler.close()
    assert stats["adopted_spools"] == 1 and stats["replayed"] == 700
    check_counts(log_path, run_id, {"orphan": 700, "later": 10})
    assert not list(spool.glob("*.spool"))
