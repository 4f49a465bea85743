"""A drop-in keeps the stdlib's contract: boundaries, overrides, attributes, encodings, odd files and arguments."""

from __future__ import annotations

import codecs
import datetime as dt
import logging
import logging.handlers
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from writers import POSIX

from flocklog import ConfigError
from flocklog.files.handlers import RotatingFileHandler, TimedRotatingFileHandler
from flocklog.files.policies import TimePolicy


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


def _record(msg: str, created: float | None = None) -> logging.LogRecord:
    record = logging.makeLogRecord({"msg": msg, "levelno": logging.INFO, "levelname": "INFO"})
    if created is not None:
        record.created = created
    return record


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


# -- 1. weekly rotation is at the midnight that ends the named day -----------------------------------------------
@POSIX
@pytest.mark.usefixtures("berlin")
def test_weekly_without_at_time_rotates_at_the_midnight_ending_the_named_day_like_the_stdlib(tmp_path: Path) -> None:
    wednesday = dt.datetime(2026, 12, 2, 10, 0).timestamp()
    w0 = TimePolicy.create("W0", 1, False, None)
    assert w0.next_after(w0.start_of(wednesday)) == dt.datetime(2026, 12, 8, 0, 0).timestamp()  # Tue 00:00
    for day in range(7):
        ours = TimedRotatingFileHandler(str(tmp_path / f"w{day}.log"), when=f"W{day}", delay=True)
        stdlib = logging.handlers.TimedRotatingFileHandler(str(tmp_path / f"s{day}.log"), when=f"W{day}", delay=True)
        for hours in range(0, 24 * 15, 5):  # two weeks, including both ends of every named day
            t = wednesday + hours * 3600
            assert ours.computeRollover(t) == stdlib.computeRollover(int(t)), (day, hours)
        ours.close()
        stdlib.close()


# -- 4. overrides and attributes ----------------------------------------------------------------------------------
def test_a_subclass_overriding_should_rollover_and_do_rollover_is_honoured(tmp_path: Path) -> None:
    calls: list[str] = []

    class EveryThird(RotatingFileHandler):
        def shouldRollover(self, record: logging.LogRecord) -> bool:
            calls.append("should")
            return calls.count("should") % 3 == 0

        def doRollover(self) -> None:
            calls.append("do")
            super().doRollover()

    handler = EveryThird(str(tmp_path / "app.log"), maxBytes=10_000_000, backupCount=5)
    for i in range(7):
        handler.handle(_record(f"r{i}"))
    handler.close()
    assert calls.count("should") == 7 and calls.count("do") == 2
    assert _contents(tmp_path) == {"app.log": "r5\nr6\n", "app.log.1": "r2\nr3\nr4\n", "app.log.2": "r0\nr1\n"}


def test_a_timed_subclass_overriding_do_rollover_is_called_at_the_boundary(tmp_path: Path) -> None:
    rotated: list[float] = []

    class Audited(TimedRotatingFileHandler):
        def doRollover(self) -> None:
            rotated.append(time.time())
            super().doRollover()

    log = tmp_path / "app.log"
    handler = Audited(str(log), when="S", backupCount=5)
    t0 = float(int(time.time()) - 10)
    os.utime  # noqa: B018  # (the live file gets its mtime from the writes below)
    handler.handle(_record("a", t0 + 0.5))
    handler.handle(_record("b", t0 + 0.7))
    os.utime(log, (t0 + 0.7, t0 + 0.7))  # as if written then
    handler.handle(_record("c", t0 + 3.5))  # a later slot: the override rotates
    handler.close()
    assert len(rotated) == 1
    assert "c\n" in log.read_text() and "a\n" not in log.read_text()


def test_manual_do_rollover_rotates_both_handlers(tmp_path: Path) -> None:
    size = RotatingFileHandler(str(tmp_path / "s.log"), maxBytes=10_000, backupCount=3)
    size.handle(_record("before"))
    size.doRollover()
    size.handle(_record("after"))
    size.close()
    assert (tmp_path / "s.log.1").read_text() == "before\n" and (tmp_path / "s.log").read_text() == "after\n"
    timed = TimedRotatingFileHandler(str(tmp_path / "t.log"), when="midnight", backupCount=3)
    timed.handle(_record("before"))
    timed.doRollover()
    timed.handle(_record("after"))
    timed.close()
    archives = [n for n in _files(tmp_path) if n.startswith("t.log.")]
    assert len(archives) == 1 and (tmp_path / archives[0]).read_text() == "before\n"
    assert (tmp_path / "t.log").read_text() == "after\n"


def _run_sizes(handler: logging.Handler, lengths: list[int]) -> None:
    handler.setFormatter(logging.Formatter("%(message)s"))
    for i, length in enumerate(lengths):
        handler.handle(_record(str(i % 10) * length))
    handler.close()


def _contents(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in directory.iterdir() if not p.name.startswith(".")}


def test_a_record_reaching_exactly_max_bytes_rotates_as_the_stdlib_does(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "stdlib"
    ours.mkdir()
    theirs.mkdir()
    lengths = [9, 9, 19, 4, 4, 1, 29, 9, 9, 9, 30, 3]  # each record is length + 1 bytes: several hit 20 exactly
    _run_sizes(RotatingFileHandler(str(ours / "app.log"), maxBytes=20, backupCount=20), lengths)
    _run_sizes(logging.handlers.RotatingFileHandler(str(theirs / "app.log"), maxBytes=20, backupCount=20), lengths)
    assert _contents(ours) == _contents(theirs)


def test_max_bytes_and_backup_count_set_after_construction_are_honoured_like_the_stdlib(tmp_path: Path) -> None:
    # The stdlib reads maxBytes/backupCount at each record; flocklog's fast path must not freeze them at start
    # (it skips tracking the file's size while size rotation is off, and must pick it up again when turned on).
    def run(handler: logging.handlers.RotatingFileHandler) -> None:
        handler.setFormatter(logging.Formatter("%(message)s"))
        for i in range(30):
            if i == 10:
                handler.maxBytes, handler.backupCount = 60, 3
            if i == 25:
                handler.maxBytes = 0  # off again: the live file grows without rotating
            handler.handle(_record(str(i % 10) * 9))
        handler.close()

    ours, theirs = tmp_path / "ours", tmp_path / "stdlib"
    ours.mkdir()
    theirs.mkdir()
    run(RotatingFileHandler(str(ours / "app.log")))
    run(logging.handlers.RotatingFileHandler(str(theirs / "app.log")))
    assert _contents(ours) == _contents(theirs)
    assert len(_contents(ours)) == 4


def test_a_timed_handler_given_max_bytes_after_construction_splits_its_slot(tmp_path: Path) -> None:
    handler = TimedRotatingFileHandler(str(tmp_path / "t.log"), when="midnight", backupCount=10)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for i in range(20):
        if i == 5:
            handler.maxBytes = 30
        handler.handle(_record(str(i % 10) * 9))
    handler.close()
    contents = _contents(tmp_path)
    assert sum(text.count("\n") for text in contents.values()) == 20
    later = [text for text in contents.values() if not text.startswith("000000000")]  # written once maxBytes was set
    assert len(later) >= 5 and all(len(text) <= 30 for text in later)


def test_suffix_and_ext_match_set_after_construction_are_used(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    handler = TimedRotatingFileHandler(str(log), when="S", backupCount=2)
    handler.suffix = "%Y%m%d-%H%M%S"
    handler.extMatch = re.compile(r"^\d{8}-\d{6}$", re.ASCII)
    t0 = float(int(time.time()) - 20)
    for second in range(5):
        handler.handle(_record(f"s{second}", t0 + second + 0.5))
    assert handler.wait_for_maintenance(timeout=30)
    handler.close()
    names = [n for n in _files(tmp_path) if n != "app.log"]
    assert len(names) == 2 and all(re.fullmatch(r"app\.log\.\d{8}-\d{6}", n) for n in names), names
    assert names[-1] == "app.log." + time.strftime("%Y%m%d-%H%M%S", time.localtime(t0 + 3))


def test_a_custom_namer_on_the_timed_handler_keeps_backup_count(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    handler = TimedRotatingFileHandler(str(log), when="S", backupCount=2)
    handler.namer = lambda name: name.replace("app.log.", "app.") + ".log"  # app.<suffix>.log
    t0 = float(int(time.time()) - 20)
    for second in range(7):
        handler.handle(_record(f"s{second}", t0 + second + 0.5))
    assert handler.wait_for_maintenance(timeout=30)
    handler.close()
    archives = [n for n in _files(tmp_path) if n != "app.log"]
    assert len(archives) == 2, archives
    assert all(re.fullmatch(r"app\.\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}\.log", n) for n in archives)


# -- 5. byte-order marks ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-8-sig"])
def test_an_encoding_with_a_byte_order_mark_writes_it_once_per_file_like_the_stdlib(
    tmp_path: Path, encoding: str
) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "stdlib"
    ours.mkdir()
    theirs.mkdir()
    for directory, cls in ((ours, RotatingFileHandler), (theirs, logging.handlers.RotatingFileHandler)):
        handler = cls(str(directory / "app.log"), maxBytes=60, backupCount=50, encoding=encoding)
        handler.setFormatter(logging.Formatter("%(message)s"))
        for i in range(12):
            handler.handle(_record(f"record {i} é"))
        handler.close()
        reopened = cls(str(directory / "app.log"), maxBytes=60, backupCount=50, encoding=encoding)
        reopened.handle(_record("after a restart"))
        reopened.close()
    bom = {"utf-16": codecs.BOM_UTF16, "utf-32": codecs.BOM_UTF32, "utf-8-sig": codecs.BOM_UTF8}[encoding]
    texts = {}
    for directory in (ours, theirs):  # (the stdlib counts maxBytes in characters, so its files split elsewhere)
        names = sorted(_files(directory), key=lambda n: -int(n.rsplit(".", 1)[1]) if n[-1].isdigit() else 0)
        assert len(names) > 2 or directory is theirs
        for name in names:
            data = (directory / name).read_bytes()
            assert data.startswith(bom) and data.count(bom) == 1, (directory.name, name)
        texts[directory.name] = "".join((directory / n).read_bytes().decode(encoding) for n in names)
    assert texts["ours"] == texts["stdlib"] and "after a restart" in texts["ours"]


# -- 6. delay, special files, numbers, missing directories ----------------------------------------------------------
@pytest.mark.parametrize("cls", [RotatingFileHandler, TimedRotatingFileHandler])
def test_delay_creates_nothing_until_the_first_record(tmp_path: Path, cls: type[logging.FileHandler]) -> None:
    handler = cls(str(tmp_path / "app.log"), delay=True)
    assert list(tmp_path.iterdir()) == []  # not the log, not the lock file
    handler.handle(_record("first"))
    handler.close()
    assert (tmp_path / "app.log").read_text() == "first\n"


@POSIX
@pytest.mark.parametrize("cls", [RotatingFileHandler, TimedRotatingFileHandler])
def test_os_devnull_and_other_non_regular_files_work_like_the_stdlib(cls: type[logging.FileHandler]) -> None:
    kwargs: dict[str, object] = {"maxBytes": 1, "backupCount": 1} if cls is RotatingFileHandler else {"when": "S"}
    before = set(os.listdir("/dev"))
    handler = cls(os.devnull, **kwargs)  # type: ignore[arg-type]  # per-class keyword arguments
    for i in range(3):
        record = _record(f"r{i}")
        assert not handler.shouldRollover(record)  # type: ignore[attr-defined]  # a rotating handler
        handler.handle(record)
    handler.close()
    assert set(os.listdir("/dev")) - before == set()  # no /dev/null.lock, no archive


def test_float_max_bytes_and_backup_count_are_accepted_like_the_stdlib(tmp_path: Path) -> None:
    handler = RotatingFileHandler(str(tmp_path / "app.log"), maxBytes=1024.0, backupCount=2.0)
    timed = TimedRotatingFileHandler(str(tmp_path / "t.log"), when="S", interval=1.0, backupCount=2.0)
    for i in range(100):
        handler.handle(_record(f"record {i:04d} " + "x" * 40))
    handler.close()
    timed.close()
    assert _files(tmp_path) == ["app.log", "app.log.1", "app.log.2", "t.log"]
    assert handler.maxBytes == 1024 and handler.backupCount == 2


@pytest.mark.parametrize("cls", [RotatingFileHandler, TimedRotatingFileHandler])
def test_a_missing_directory_is_both_a_config_error_and_a_file_not_found_error(
    tmp_path: Path, cls: type[logging.FileHandler]
) -> None:
    for delay in (False, True):
        with pytest.raises(FileNotFoundError) as caught:
            cls(str(tmp_path / "missing" / "app.log"), delay=delay)
        assert isinstance(caught.value, ConfigError) and "does not exist" in str(caught.value)
    with pytest.raises(FileNotFoundError):  # what code written for the stdlib catches
        logging.handlers.RotatingFileHandler(str(tmp_path / "missing" / "app.log"))


# -- 7. the lock file is not matched by the log's own glob ------------------------------------------------------------
def test_the_lock_file_is_hidden_and_not_matched_by_the_logs_glob(tmp_path: Path) -> None:
    handler = RotatingFileHandler(str(tmp_path / "app.log"), maxBytes=100, backupCount=2)
    for i in range(20):
        handler.handle(_record(f"record {i} " + "y" * 20))
    handler.close()
    assert sorted(p.name for p in tmp_path.glob("app.log*")) == ["app.log", "app.log.1", "app.log.2"]
    assert (tmp_path / ".app.log.lock").exists() and handler.lock_file == str(tmp_path / ".app.log.lock")
    assert RotatingFileHandler.baseLockFilename(str(tmp_path / "app.log")) == (str(tmp_path), ".app.log.lock")


def test_the_lock_file_of_the_previous_release_is_still_used_while_it_exists(tmp_path: Path) -> None:
    old = tmp_path / "app.log.lock"
    old.write_bytes(b"\0" * 16)  # left by flocklog 0.1, whose processes may still be running
    handler = RotatingFileHandler(str(tmp_path / "app.log"), maxBytes=100, backupCount=2)
    for i in range(20):
        handler.handle(_record(f"record {i} " + "y" * 20))
    handler.close()
    assert not (tmp_path / ".app.log.lock").exists()
    assert int.from_bytes(old.read_bytes()[:8], "little") > 0  # rotations were announced through the old file
