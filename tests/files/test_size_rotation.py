"""Size rotation shared by many processes: nothing lost, doubled or torn, archives named like the stdlib's."""

from __future__ import annotations

import fcntl
import gzip
import logging
import logging.config
import logging.handlers
import multiprocessing
import os
import signal
import tempfile
import time
from pathlib import Path

import pytest
from writers import POSIX, build, start_interpreter, start_process, write

from flocklog import ConfigError
from flocklog.files.handlers import ConcurrentRotatingFileHandler, RotatingFileHandler
from flocklog.stamps import Stamp, stamped_logger, write_stamped
from flocklog.verify import VerifyOptions, verify_paths

pytestmark = POSIX  # fork, fcntl, signals
SIZE = "flocklog.RotatingFileHandler"


def _run_mixed_writers(log: Path, run: str, kwargs: dict[str, object], count: int) -> dict[str, int]:
    """Eight writers at once: three forked, three spawned, two separate interpreters."""
    queue = multiprocessing.get_context("spawn").Queue()
    procs = [start_process("fork", queue, SIZE, kwargs, run, f"fork{i}", count) for i in range(3)]
    procs += [start_process("spawn", queue, SIZE, kwargs, run, f"spawn{i}", count) for i in range(3)]
    others = [start_interpreter(SIZE, kwargs, run, f"proc{i}", count=count) for i in range(2)]
    written = dict(queue.get(timeout=120) for _ in range(6))
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    for i, other in enumerate(others):
        out, err = other.communicate(timeout=120)
        assert other.returncode == 0, err
        written[f"proc{i}"] = int(out.strip())
    return written


def test_eight_mixed_writers_with_fast_rotation_lose_duplicate_and_tear_nothing(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    kwargs = {"filename": str(log), "maxBytes": 64 * 1024, "backupCount": 2000}
    written = _run_mixed_writers(log, run_id, kwargs, count=3000)
    report = verify_paths([str(log)], VerifyOptions(expected_counts=written, writers=8, allow_expired=False))
    assert report.ok, report.to_dict()
    assert report.records == 8 * 3000
    assert report.archives > 20  # it really rotated, many times
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("app.log."))
    assert "app.log.1" in names and all(n == ".app.log.lock" or n.split(".")[-1].isdigit() for n in names)


def test_small_backup_count_only_expires_an_oldest_prefix(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    kwargs = {"filename": str(log), "maxBytes": 32 * 1024, "backupCount": 3}
    written = _run_mixed_writers(log, run_id, kwargs, count=2000)
    # A writer that finished early may have expired entirely; every writer still present must end complete.
    present = {w.writer for w in verify_paths([str(log)]).writers}
    expected = {w: n for w, n in written.items() if w in present}
    report = verify_paths([str(log)], VerifyOptions(expected_counts=expected, backup_count=3))
    assert present and report.lost == 0 and report.duplicated == 0 and report.torn == 0, report.to_dict()
    assert report.expired > 0  # retention removed the oldest records, and only those
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("app.log.") and p.name[8:].isdigit()]) <= 3


def _kill_me_writer(log: str, run: str, writer: str) -> None:
    handler = build(SIZE, {"filename": log, "maxBytes": 16 * 1024, "backupCount": 5000})
    logger = stamped_logger(f"kill.{writer}", handler)
    write_stamped(logger, run=run, writer=writer, duration=60, payload_size=300)


def test_writers_killed_with_sigkill_leave_no_torn_line(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_kill_me_writer, args=(str(log), run_id, f"k{i}")) for i in range(4)]
    for proc in procs:
        proc.start()
    time.sleep(1.5)
    for proc in procs:
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    report = verify_paths([str(log)], VerifyOptions(writers=4, allow_expired=False))
    assert report.records > 1000
    assert report.torn == 0 and report.lost == 0 and report.duplicated == 0, report.to_dict()


def test_fork_while_logging_keeps_parent_and_child_writing(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    handler = build(SIZE, {"filename": str(log), "maxBytes": 8 * 1024, "backupCount": 500})
    logger = stamped_logger("fork.parent", handler)
    write_stamped(logger, run=run_id, writer="parent", count=500)
    pid = os.fork()
    if pid == 0:  # the child inherits the open handler and keeps using it
        code = 0
        try:
            write_stamped(logger, run=run_id, writer="child", count=500)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    for seq in range(500, 1000):
        logger.info(Stamp(run_id, "parent", seq))
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    handler.close()
    report = verify_paths([str(log)], VerifyOptions(expected_counts={"parent": 1000, "child": 500}))
    assert report.ok, report.to_dict()


def test_compressed_archives_hold_every_record_and_leave_no_temp_files(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    handler = build(SIZE, {"filename": str(log), "maxBytes": 16 * 1024, "backupCount": 100, "compress": True})
    assert isinstance(handler, RotatingFileHandler)
    logger = stamped_logger("gz", handler)
    write_stamped(logger, run=run_id, writer="w", count=2000, payload_size=100)
    assert handler.wait_for_maintenance(timeout=30)
    handler.close()
    gz = sorted(tmp_path.glob("app.log.*.gz"))
    assert len(gz) > 5
    for archive in gz:
        gzip.decompress(archive.read_bytes())  # a valid, complete gzip stream
    assert not list(tmp_path.glob("*.tmp"))
    report = verify_paths([str(log)], VerifyOptions(expect_per_writer=2000, writers=1, allow_expired=False))
    assert report.ok, report.to_dict()


def test_a_crashed_compressors_temp_file_is_cleaned_but_a_live_ones_is_kept(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    leftover = tmp_path / "app.log.3.gz.tmp"
    busy = tmp_path / "app.log.49.gz.tmp"  # an old temp file a live compressor still writes (holds its flock)
    old = time.time() - 3600
    for path in (leftover, busy):
        path.write_bytes(b"\x1f\x8b half a gzip stream")
        os.utime(path, (old, old))
    holder = os.open(busy, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    handler = build(SIZE, {"filename": str(log), "maxBytes": 4096, "backupCount": 50, "compress": True})
    assert isinstance(handler, RotatingFileHandler)
    write(SIZE, {"filename": str(log), "maxBytes": 4096, "backupCount": 50, "compress": True}, run_id, "w", 200)
    handler.doRollover()
    assert handler.wait_for_maintenance(timeout=30)
    handler.close()
    assert not leftover.exists()
    assert busy.exists()  # a compressor that is alive keeps its temp file, however old
    os.close(holder)


def test_full_disk_is_reported_counted_survived_and_recovered(small_fs: Path, run_id: str) -> None:
    log = small_fs / "app.log"
    filler = small_fs / "filler"
    filler.write_bytes(b"\0" * (1024 * 1024 - 64 * 1024))  # leave ~64 KiB for the log
    handler = RotatingFileHandler(str(log), maxBytes=10 * 1024 * 1024, backupCount=1)
    handler.setFormatter(logging.Formatter("%(message)s"))
    reported: list[logging.LogRecord] = []
    handler.handleError = reported.append  # type: ignore[method-assign]  # observe the stdlib's error hook
    logger = stamped_logger("full", handler)
    write_stamped(logger, run=run_id, writer="w", count=1000, payload_size=500)  # ~540 KB into ~64 KiB
    assert handler.dropped > 0 and len(reported) == handler.dropped  # every failure reported and counted
    filler.unlink()  # space comes back
    write_stamped(logger, run=run_id, writer="after", count=300, payload_size=500)
    handler.close()
    report = verify_paths([str(log)], VerifyOptions(run=run_id))
    by_writer = {w.writer: w for w in report.writers}
    assert by_writer["after"].records == 300 and by_writer["after"].lost == 0  # writing resumed, nothing lost
    # Nothing vanished silently: what is not in the file was counted as dropped (a record cut short by the
    # full disk is ended with a newline, shows as one torn line, and was counted too).
    assert by_writer["w"].records + handler.dropped == 1000
    assert report.torn <= 1 and report.duplicated == 0


def test_a_deleted_log_file_is_recreated_after_a_write_failure(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    handler = RotatingFileHandler(str(log), maxBytes=1024 * 1024, backupCount=1)
    logger = stamped_logger("deleted", handler)
    write_stamped(logger, run=run_id, writer="a", count=10)
    log.unlink()
    handler.reopen()  # what SIGHUP handling or logrotate's postrotate calls
    write_stamped(logger, run=run_id, writer="b", count=10)
    handler.close()
    assert [w.writer for w in verify_paths([str(log)]).writers] == ["b"]


def test_bad_arguments_fail_at_construction_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="maxBytes"):
        RotatingFileHandler(str(tmp_path / "a.log"), maxBytes=-1)
    with pytest.raises(ConfigError, match="backupCount"):
        RotatingFileHandler(str(tmp_path / "a.log"), backupCount=-2)
    with pytest.raises(ConfigError, match="does not exist"):
        RotatingFileHandler(str(tmp_path / "missing" / "a.log"), delay=True)
    # A directory this process may not write to: checked as an unprivileged user, since root may write anywhere.
    locked = Path(tempfile.mkdtemp(prefix="flocklog-locked-"))  # under /tmp, reachable by every user
    locked.chmod(0o755)
    pid = os.fork()
    if pid == 0:  # the child drops root, then constructs the handler exactly as an app would
        code = 1
        try:
            if os.geteuid() == 0:
                os.setuid(65534)
            RotatingFileHandler(str(locked / "a.log"))
        except ConfigError as exc:
            code = 3 if "not writable" in str(exc) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    locked.rmdir()
    assert os.waitstatus_to_exitcode(status) == 3
    with pytest.raises(ConfigError, match="unsupported option"):
        RotatingFileHandler(str(tmp_path / "a.log"), frobnicate=True)


def test_dictconfig_by_class_path_and_stdlib_parity(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "f": {
                    "class": "flocklog.RotatingFileHandler",
                    "filename": str(log),
                    "maxBytes": 200,
                    "backupCount": 2,
                    "compress": False,
                }
            },
            "loggers": {"dc": {"handlers": ["f"], "level": "INFO", "propagate": False}},
        }
    )
    logger = logging.getLogger("dc")
    handler = logger.handlers[0]
    assert isinstance(handler, logging.handlers.RotatingFileHandler)
    assert (handler.baseFilename, handler.maxBytes, handler.backupCount) == (str(log), 200, 2)
    for i in range(50):
        logger.info("line %d %s", i, "x" * 20)
    handler.close()
    logger.handlers.clear()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".app.log.lock", "app.log", "app.log.1", "app.log.2"]
    assert ConcurrentRotatingFileHandler is RotatingFileHandler


def test_namer_and_rotator_are_honoured(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    handler = RotatingFileHandler(str(log), maxBytes=100, backupCount=3)
    rotated: list[tuple[str, str]] = []

    def rotator(source: str, dest: str) -> None:
        rotated.append((source, dest))
        os.rename(source, dest)

    handler.namer = lambda name: name + ".old"
    handler.rotator = rotator
    logger = logging.getLogger("namer")
    logger.propagate = False
    logger.addHandler(handler)
    for i in range(20):
        logger.warning("record %d %s", i, "y" * 30)
    handler.close()
    logger.removeHandler(handler)
    assert rotated and all(dest.endswith(".1.old") for _, dest in rotated)
    assert (tmp_path / "app.log.3.old").exists()


def test_an_idle_writer_never_writes_into_an_archive_that_rotation_deleted(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    # Two handlers on one set act like two processes: each has its own descriptor and lock description.
    busy = build(SIZE, {"filename": str(log), "maxBytes": 4096, "backupCount": 2})
    idle = build(SIZE, {"filename": str(log), "maxBytes": 4096, "backupCount": 2})
    busy_logger = stamped_logger("idle.busy", busy)
    idle_logger = stamped_logger("idle.idle", idle)
    write_stamped(idle_logger, run=run_id, writer="idle", count=1, payload_size=10)
    # Within the path-check interval the busy writer rotates the idle one's file out of the set (deleted).
    write_stamped(busy_logger, run=run_id, writer="busy", count=200, payload_size=200)
    for seq in range(1, 4):  # small records that would still fit into the deleted file
        idle_logger.info(Stamp(run_id, "idle", seq))
    busy.close()
    idle.close()
    idle_lines = [line for line in log.read_text().splitlines() if f" {run_id} idle " in line]
    assert len(idle_lines) == 3  # seq 1-3 reached the live file, not a deleted inode


def test_an_externally_truncated_lock_file_never_crashes_a_writer(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    handler = RotatingFileHandler(str(log), maxBytes=4096, backupCount=500)
    logger = stamped_logger("truncated-lock", handler)
    write_stamped(logger, run=run_id, writer="w", count=200)
    (tmp_path / ".app.log.lock").write_bytes(b"")  # a cleanup script or a broad logrotate glob empties it
    write_stamped(logger, run=run_id, writer="w2", count=200)  # rotations continue; no SIGBUS, nothing lost
    handler.close()
    report = verify_paths([str(log)], VerifyOptions(expected_counts={"w": 200, "w2": 200}, allow_expired=False))
    assert report.ok, report.to_dict()


def test_a_hole_left_by_a_rotation_killed_mid_shift_is_closed_by_the_next_rotation(tmp_path: Path) -> None:
    """A writer SIGKILLed inside a shift leaves ``.6`` and no ``.5`` (it renamed ``.5`` to ``.6`` and died).

    The stdlib shifts each archive by one, so the hole would travel up the set for ever and ``flocklog verify``
    would (rightly) see an archive missing inside the numbering. The next rotation must close it, keep the
    archives in age order and carry the ``.gz`` twins along.
    """
    log = tmp_path / "app.log"
    log.write_text("live\n")
    for index, age in [(1, 1), (2, 2), (3, 3), (4, 4), (6, 5)]:  # the state the killed shift left behind
        name = tmp_path / f"app.log.{index}"
        if age == 3:
            with gzip.open(f"{name}.gz", "wt") as out:
                out.write(f"age {age}\n")
        else:
            name.write_text(f"age {age}\n")
    handler = RotatingFileHandler(str(log), maxBytes=1000, backupCount=10)
    try:
        handler.doRollover()
    finally:
        handler.close()
    archives = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("app.log."))
    assert archives == ["app.log.1", "app.log.2", "app.log.3", "app.log.4.gz", "app.log.5", "app.log.6"]
    assert (tmp_path / "app.log.1").read_text() == "live\n"
    with gzip.open(tmp_path / "app.log.4.gz", "rt") as compressed:
        assert compressed.read() == "age 3\n"
    assert [(tmp_path / f"app.log.{i}").read_text() for i in (2, 3, 5, 6)] == [f"age {a}\n" for a in (1, 2, 4, 5)]
