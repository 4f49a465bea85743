"""Time rotation from the clock: one rotation per boundary across processes, never an overwritten archive."""

from __future__ import annotations

import datetime as dt
import gzip
import logging
import logging.config
import logging.handlers
import multiprocessing
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from writers import POSIX, start_interpreter, start_process

from flocklog import ConfigError
from flocklog.files.handlers import ConcurrentTimedRotatingFileHandler, TimedRotatingFileHandler
from flocklog.files.policies import TimePolicy
from flocklog.stamps import format_stamp, parse_stamp
from flocklog.verify import VerifyOptions, verify_paths

pytestmark = POSIX  # fork, fcntl, TZ
TIMED = "flocklog.TimedRotatingFileHandler"


def test_writers_started_at_different_moments_rotate_once_per_second(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    kwargs = {"filename": str(log), "when": "S", "backupCount": 1000}
    queue = multiprocessing.get_context("spawn").Queue()
    procs = [start_process("fork", queue, TIMED, kwargs, run_id, f"fork{i}", None, 3.5, 64, 0.0005) for i in range(2)]
    time.sleep(0.7)
    procs += [
        start_process("spawn", queue, TIMED, kwargs, run_id, f"spawn{i}", None, 3.0, 64, 0.0005) for i in range(2)
    ]
    time.sleep(0.9)
    others = [
        start_interpreter(TIMED, kwargs, run_id, f"proc{i}", duration=2.0, pause=0.0005, payload_size=64)
        for i in range(2)
    ]
    written = dict(queue.get(timeout=60) for _ in range(4))
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    for i, other in enumerate(others):
        out, err = other.communicate(timeout=60)
        assert other.returncode == 0, err
        written[f"proc{i}"] = int(out.strip())
    report = verify_paths([str(log)], VerifyOptions(expected_counts=written, writers=6, when="S", allow_expired=False))
    assert report.ok, report.to_dict()
    assert report.interval_violations == 0 and report.split_intervals == 0
    assert report.archives >= 3  # about four seconds of writing: one archive per elapsed boundary


def _record(created: float, seq: int, writer: str = "w", run: str = "r") -> logging.LogRecord:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, format_stamp(run, writer, seq, created), None, None)
    record.created = created
    return record


def _slot_name(log: Path, start: float) -> Path:
    return log.with_name(log.name + "." + time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(start)))


def test_a_boundary_is_rotated_once_and_stragglers_reach_their_own_archive(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    # Two handlers on one set behave like two processes: each has its own descriptors and lock description.
    first = TimedRotatingFileHandler(str(log), when="S", backupCount=10)
    second = TimedRotatingFileHandler(str(log), when="S", backupCount=10)
    t0 = float(int(time.time()) - 10)
    first.handle(_record(t0 + 0.1, 0, "a"))
    second.handle(_record(t0 + 0.2, 0, "b"))
    first.handle(_record(t0 + 1.1, 1, "a"))  # boundary: the first handler rotates
    second.handle(_record(t0 + 1.2, 1, "b"))  # must not rotate again
    second.handle(_record(t0 + 0.9, 2, "b"))  # a straggler of the earlier slot
    first.close()
    second.close()
    archive = _slot_name(log, t0)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["app.log", ".app.log.lock", archive.name])
    assert [line.split()[2:4] for line in archive.read_text().splitlines()] == [["a", "0"], ["b", "0"], ["b", "2"]]
    assert [line.split()[2:4] for line in log.read_text().splitlines()] == [["a", "1"], ["b", "1"]]


def test_an_existing_archive_is_never_overwritten(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    t0 = float(int(time.time()) - 10)
    precious = _slot_name(log, t0)
    precious.write_text("written by a deployment before this one\n")
    handler = TimedRotatingFileHandler(str(log), when="S", backupCount=10)
    handler.handle(_record(t0 + 0.5, 0))
    handler.handle(_record(t0 + 1.5, 1))
    handler.close()
    assert precious.read_text() == "written by a deployment before this one\n"
    second = precious.with_name(precious.name + ".1")
    assert second.exists() and "r w 0 " in second.read_text()


def test_backup_count_and_max_age_remove_only_the_oldest_archives(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    now = float(int(time.time()))
    for age in (5000, 4000, 300, 200, 100):
        _slot_name(log, now - age).write_text("old\n")
    handler = TimedRotatingFileHandler(str(log), when="S", backupCount=3, max_age=3600)
    handler.handle(_record(now - 50.5, 0))
    handler.handle(_record(now - 49.5, 1))  # rotation: retention runs in the background
    assert handler.wait_for_maintenance(timeout=20)
    handler.close()
    left = sorted(p.name for p in tmp_path.iterdir() if p.name not in ("app.log", ".app.log.lock"))
    assert left == sorted(_slot_name(log, now - age).name for age in (200, 100, 51))


def test_timed_archives_are_gzipped_off_the_logging_call(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    handler = TimedRotatingFileHandler(str(log), when="S", backupCount=10, compress=True)
    t0 = float(int(time.time()) - 20)
    for second in range(4):
        for seq in range(50):
            handler.handle(_record(t0 + second + seq / 100, second * 50 + seq))
    assert handler.wait_for_maintenance(timeout=20)
    handler.close()
    archives = sorted(tmp_path.glob("app.log.*.gz"))
    assert len(archives) == 3
    assert all(len(gzip.decompress(a.read_bytes()).splitlines()) == 50 for a in archives)
    assert not list(tmp_path.glob("*.tmp"))


@pytest.fixture
def berlin() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Berlin"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


def _local(*fields: int) -> float:
    return time.mktime((*fields, 0, 0, -1))  # type: ignore[arg-type]  # a 9-tuple for mktime


@pytest.mark.usefixtures("berlin")
def test_midnight_slots_follow_dst_like_the_stdlib() -> None:
    policy = TimePolicy.create("midnight", 1, False, None)
    spring = _local(2026, 3, 29, 12, 0, 0)  # clocks go forward at 02:00: a 23-hour day
    assert policy.start_of(spring) == _local(2026, 3, 29, 0, 0, 0)
    assert policy.next_after(policy.start_of(spring)) - policy.start_of(spring) == 23 * 3600
    autumn = _local(2026, 10, 25, 12, 0, 0)  # clocks go back at 03:00: a 25-hour day
    assert policy.next_after(policy.start_of(autumn)) - policy.start_of(autumn) == 25 * 3600
    stdlib = logging.handlers.TimedRotatingFileHandler(os.devnull, when="midnight", delay=True)
    for t in (spring, autumn, _local(2026, 3, 28, 23, 30, 0)):
        assert policy.next_after(policy.start_of(t)) == stdlib.computeRollover(int(t))


@pytest.mark.usefixtures("berlin")
def test_weekly_and_at_time_slots() -> None:
    monday_3am = TimePolicy.create("W0", 1, False, dt.time(3, 0))
    wednesday = _local(2026, 11, 25, 10, 0, 0)
    assert monday_3am.start_of(wednesday) == _local(2026, 11, 23, 3, 0, 0)
    assert monday_3am.next_after(monday_3am.start_of(wednesday)) == _local(2026, 11, 30, 3, 0, 0)
    before = _local(2026, 11, 23, 2, 59, 0)
    assert monday_3am.start_of(before) == _local(2026, 11, 16, 3, 0, 0)


def test_every_process_computes_the_same_slot_whenever_it_started() -> None:
    policy = TimePolicy.create("M", 5, True, None)
    t = 1_700_000_123.4
    assert policy.start_of(t) == 1_700_000_100.0  # a multiple of 300 s since the epoch, not "start + 300"
    assert policy.next_after(policy.start_of(t)) == 1_700_000_400.0


def test_bad_arguments_fail_at_construction(tmp_path: Path) -> None:
    log = str(tmp_path / "a.log")
    with pytest.raises(ConfigError, match="invalid rollover interval"):
        TimedRotatingFileHandler(log, when="fortnight")
    with pytest.raises(ValueError, match="interval"):
        TimedRotatingFileHandler(log, when="S", interval=0)
    with pytest.raises(ConfigError, match="atTime"):
        TimedRotatingFileHandler(log, when="S", atTime=dt.time(1, 0))
    with pytest.raises(ConfigError, match="does not exist"):
        TimedRotatingFileHandler(str(tmp_path / "nope" / "a.log"), delay=True)


def test_dictconfig_and_stdlib_attributes(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"t": {"class": "flocklog.TimedRotatingFileHandler", "filename": str(log), "when": "midnight"}},
            "loggers": {"tdc": {"handlers": ["t"], "level": "INFO", "propagate": False}},
        }
    )
    handler = logging.getLogger("tdc").handlers[0]
    assert isinstance(handler, logging.handlers.TimedRotatingFileHandler)
    assert (handler.when, handler.suffix, handler.utc) == ("MIDNIGHT", "%Y-%m-%d", False)
    assert handler.extMatch.match("2026-11-25")
    handler.close()
    logging.getLogger("tdc").handlers.clear()
    assert ConcurrentTimedRotatingFileHandler is TimedRotatingFileHandler


def test_size_within_a_slot_splits_into_numbered_archives_of_that_slot(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    kwargs = {"filename": str(log), "when": "S", "backupCount": 1000, "maxBytes": 8 * 1024}
    queue = multiprocessing.get_context("fork").Queue()
    procs = [start_process("fork", queue, TIMED, kwargs, run_id, f"w{i}", None, 2.5, 64, 0.0002) for i in range(3)]
    written = dict(queue.get(timeout=60) for _ in range(3))
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    report = verify_paths([str(log)], VerifyOptions(expected_counts=written, writers=3, when="S", allow_expired=False))
    assert report.lost == 0 and report.duplicated == 0 and report.torn == 0, report.to_dict()
    # Every archive holds only records of its own second. (verify's live-file rule assumes the live file is newer
    # than every archive's slot; with size splits it may continue the newest archive's slot, checked here instead.)
    assert all(f.interval_violations == 0 for f in report.files if f.path != str(log)), report.to_dict()
    assert report.split_intervals > 0  # several archives for one second: <slot>, <slot>.1, ...
    newest = max(f.interval_start for f in report.files if f.interval_start is not None)
    live = [parse_stamp(line) for line in log.read_text().splitlines()]
    slots = {int(s.created) for s in live if s is not None}  # when='S' local slots are whole epoch seconds
    assert None not in live and len(slots) <= 1 and all(slot >= newest for slot in slots)
    for path in tmp_path.iterdir():
        if path.name not in ("app.log", ".app.log.lock"):
            # Appends take no lock, so each of the 3 writers may add one (~160-byte) record past maxBytes.
            assert path.stat().st_size <= 8 * 1024 + 3 * 256
