"""Compression and retention left pending at close() are finished there, or by the next handler of the set."""

from __future__ import annotations

import gzip
import logging
import multiprocessing
import os
import signal
import time
from pathlib import Path

from writers import POSIX, build, start_process

from flocklog.stamps import stamped_logger, write_stamped
from flocklog.verify import VerifyOptions, verify_paths

pytestmark = POSIX  # fork, fcntl, signals
SIZE = "flocklog.RotatingFileHandler"
TIMED = "flocklog.TimedRotatingFileHandler"


def _wait_for(condition: object, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]  # a zero-argument callable
            return True
        time.sleep(0.1)
    return False


def _plain_archives(directory: Path, base: str) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.startswith(base + ".") and p.name[len(base) + 1 :].isdigit()]


def test_processes_that_exit_leave_every_archive_compressed_and_retention_applied(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    kwargs = {"filename": str(log), "maxBytes": 16 * 1024, "backupCount": 4, "compress": True}
    queue = multiprocessing.get_context("spawn").Queue()
    procs = [start_process("spawn", queue, SIZE, kwargs, run_id, f"w{i}", 1500, None, 100) for i in range(3)]
    for _ in procs:
        queue.get(timeout=120)
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    # Nothing runs any more: what close() left is what a user finds.
    assert _plain_archives(tmp_path, "app.log") == []
    gz = sorted(tmp_path.glob("app.log.*.gz"))
    assert 0 < len(gz) <= 4
    for archive in gz:
        gzip.decompress(archive.read_bytes())
    assert not list(tmp_path.glob("*.tmp"))


def test_timed_archives_are_compressed_and_trimmed_by_close(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    handler = build(TIMED, {"filename": str(log), "when": "S", "backupCount": 2, "compress": True})
    t0 = float(int(time.time()) - 20)
    for second in range(5):
        record = logging.makeLogRecord({"msg": f"s{second}", "levelno": 20, "levelname": "INFO"})
        record.created = t0 + second + 0.5
        handler.handle(record)
    handler.close()  # no wait_for_maintenance(): close() itself finishes the work
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert len(names) == 3 and names[0] == "app.log" and all(n.endswith(".gz") for n in names[1:]), names


def _killed_writer(log: str, run: str) -> None:
    handler = build(SIZE, {"filename": log, "maxBytes": 8 * 1024, "backupCount": 50, "compress": True})
    logger = stamped_logger("killed", handler)
    write_stamped(logger, run=run, writer="k", count=600, payload_size=100)
    os.kill(os.getpid(), signal.SIGKILL)  # no close(): the archives stay plain


def test_the_next_handler_that_opens_the_set_finishes_what_a_killed_process_left(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    proc = multiprocessing.get_context("fork").Process(target=_killed_writer, args=(str(log), run_id))
    proc.start()
    proc.join(timeout=120)
    assert proc.exitcode == -signal.SIGKILL
    assert _plain_archives(tmp_path, "app.log")  # left behind
    later = build(SIZE, {"filename": str(log), "maxBytes": 8 * 1024, "backupCount": 50, "compress": True})
    assert _wait_for(lambda: not _plain_archives(tmp_path, "app.log"))  # its worker compresses them on its own
    later.close()
    report = verify_paths([str(log)], VerifyOptions(expected_counts={"k": 600}, allow_expired=False))
    assert report.ok, report.to_dict()
