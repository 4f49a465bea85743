"""Migrating from concurrent-log-handler (0.9.31) or the stdlib: every keyword argument is accepted and honoured.

Each pair of handlers gets the same arguments and the same records in two directories; what lands on disk is
compared with what the original library wrote. (concurrent-log-handler is in the dev extra.)
"""

from __future__ import annotations

import datetime as dt
import gzip
import inspect
import logging
import logging.handlers
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from writers import POSIX

import flocklog
from flocklog import ConfigError

clh = pytest.importorskip("concurrent_log_handler")
pwd = pytest.importorskip("pwd")  # POSIX only: users and groups
grp = pytest.importorskip("grp")
pytestmark = POSIX  # owner, chmod and umask are POSIX notions

USER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name


def _keywords(cls: type) -> set[str]:
    return {
        name
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }


def test_every_keyword_of_the_stdlib_and_of_concurrent_log_handler_is_a_keyword_of_ours() -> None:
    assert clh.__version__ if hasattr(clh, "__version__") else True
    pairs = [
        (flocklog.RotatingFileHandler, [logging.handlers.RotatingFileHandler, clh.ConcurrentRotatingFileHandler]),
        (
            flocklog.TimedRotatingFileHandler,
            [logging.handlers.TimedRotatingFileHandler, clh.ConcurrentTimedRotatingFileHandler],
        ),
    ]
    for ours, originals in pairs:
        for original in originals:
            missing = _keywords(original) - _keywords(ours)
            assert not missing, (ours.__name__, original.__name__, missing)
    # The timed clh class also takes mode= (through **kwargs); so do we.
    assert "mode" in _keywords(flocklog.TimedRotatingFileHandler)


def _every_option(directory: Path) -> dict[str, Any]:
    return {
        "mode": "a",
        "encoding": "ascii",
        "debug": False,
        "use_gzip": True,
        "owner": (USER, GROUP),
        "chmod": 0o640,
        "umask": 0o027,
        "newline": "",
        "terminator": "\r\n",
        "unicode_error_policy": "replace",
        "lock_file_directory": str(directory / "locks" / "nested"),  # missing: created, as clh does
        "keep_file_open": False,
    }


def _write(handler: logging.Handler, count: int) -> None:
    handler.setFormatter(logging.Formatter("%(message)s"))
    for i in range(count):
        handler.handle(logging.makeLogRecord({"msg": f"record {i:03d} caf\u00e9 " + "z" * 20}))
    handler.close()


def _joined(directory: Path) -> bytes:
    """Every record on disk, oldest archive first, decompressed."""
    archives = sorted(
        (p for p in directory.iterdir() if p.name.startswith("app.log.")),
        key=lambda p: -int(p.name.split(".")[2]),
    )
    data = b"".join(gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes() for p in archives)
    return data + (directory / "app.log").read_bytes()


def test_size_handler_with_every_clh_option_writes_what_clh_writes(tmp_path: Path) -> None:
    theirs, ours = tmp_path / "clh", tmp_path / "flocklog"
    theirs.mkdir()
    ours.mkdir()
    size = {"maxBytes": 300, "backupCount": 50, "delay": None}
    _write(clh.ConcurrentRotatingFileHandler(str(theirs / "app.log"), **size, **_every_option(theirs)), 40)
    handler = flocklog.ConcurrentRotatingFileHandler(str(ours / "app.log"), **size, **_every_option(ours))
    _write(handler, 40)
    assert handler.num_rollovers > 3 and callable(handler.baseLockFilename)
    assert _joined(ours) == _joined(theirs)  # same bytes: \r\n terminators, '?' for what ascii cannot hold
    assert b"\r\n" in _joined(ours) and b"caf?" in _joined(ours)
    for directory in (ours, theirs):
        logs = [p for p in directory.iterdir() if p.is_file()]
        assert {stat.S_IMODE(p.stat().st_mode) for p in logs} == {0o640}, directory  # live file and .gz archives
        assert {p.suffix for p in logs if p.name != "app.log"} == {".gz"}
        assert [p.name for p in (directory / "locks" / "nested").iterdir()]  # the lock lives there
    # Deliberate difference: clh rotates once a file has reached maxBytes, flocklog (like the stdlib) before a
    # record would reach it, so every flocklog archive stays below maxBytes.
    assert all(len(gzip.decompress(p.read_bytes())) < 300 for p in ours.glob("app.log.*.gz"))


def test_timed_handler_with_every_clh_and_stdlib_option_writes_what_clh_writes(tmp_path: Path) -> None:
    theirs, ours = tmp_path / "clh", tmp_path / "flocklog"
    theirs.mkdir()
    ours.mkdir()
    timed = {
        "when": "midnight",
        "interval": 1,
        "backupCount": 5,
        "delay": False,
        "utc": False,
        "atTime": dt.time(0, 0),
        "errors": None,
        "maxBytes": 0,
    }
    _write(clh.ConcurrentTimedRotatingFileHandler(str(theirs / "app.log"), **timed, **_every_option(theirs)), 30)
    _write(flocklog.ConcurrentTimedRotatingFileHandler(str(ours / "app.log"), **timed, **_every_option(ours)), 30)
    if len(list(ours.glob("app.log.*"))) == len(list(theirs.glob("app.log.*"))) == 0:  # not across a midnight
        assert (ours / "app.log").read_bytes() == (theirs / "app.log").read_bytes()
    assert stat.S_IMODE((ours / "app.log").stat().st_mode) == stat.S_IMODE((theirs / "app.log").stat().st_mode)
    assert list((ours / "locks" / "nested").iterdir())


def test_a_timed_handler_honours_mode_w_like_a_file_handler(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("from an earlier run\n")
    _write(flocklog.TimedRotatingFileHandler(str(log), when="midnight", mode="w"), 1)
    assert log.read_text() == "record 000 caf\u00e9 " + "z" * 20 + "\n"


def test_keep_file_open_false_holds_no_descriptor_between_records(tmp_path: Path) -> None:
    handler = flocklog.RotatingFileHandler(str(tmp_path / "app.log"), keep_file_open=False)
    handler.handle(logging.makeLogRecord({"msg": "one"}))
    assert handler._fd is None
    handler.close()


def test_the_plain_file_mode_option_on_both_handlers(tmp_path: Path) -> None:
    for cls, name in ((flocklog.RotatingFileHandler, "a.log"), (flocklog.TimedRotatingFileHandler, "b.log")):
        handler = cls(str(tmp_path / name), file_mode=0o660)
        handler.handle(logging.makeLogRecord({"msg": "shared between users"}))
        handler.close()
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o660
        assert stat.S_IMODE((tmp_path / f".{name}.lock").stat().st_mode) == 0o660


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("frobnicate", True),
        ("owner", ("no-such-user-flocklog", GROUP)),
        ("unicode_error_policy", "shrug"),
        ("newline", "\t"),
        ("chmod", "rw-r-----"),
        ("umask", 0o7777),
    ],
)
def test_an_option_that_cannot_be_honoured_is_a_config_error_naming_it(
    tmp_path: Path, option: str, value: object
) -> None:
    for cls in (flocklog.RotatingFileHandler, flocklog.TimedRotatingFileHandler):
        with pytest.raises(ConfigError, match=option.split("_")[0]):
            cls(str(tmp_path / "app.log"), **{option: value})


def test_owner_is_given_to_the_log_its_archives_and_the_lock_file(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root may give files to another user")
    nobody = pwd.getpwnam("nobody")
    group = grp.getgrgid(nobody.pw_gid).gr_name
    handler = flocklog.RotatingFileHandler(
        str(tmp_path / "app.log"), maxBytes=200, backupCount=3, owner=("nobody", group), compress=True
    )
    _write(handler, 30)
    files = [p for p in tmp_path.iterdir() if p.is_file()]
    assert {p.name for p in files} >= {".app.log.lock", "app.log", "app.log.1.gz"}
    assert {(p.stat().st_uid, p.stat().st_gid) for p in files} == {(nobody.pw_uid, nobody.pw_gid)}


def test_chmod_is_applied_to_an_existing_log_file_as_clh_does(tmp_path: Path) -> None:
    for name, cls in (("clh.log", clh.ConcurrentRotatingFileHandler), ("ours.log", flocklog.RotatingFileHandler)):
        path = tmp_path / name
        path.write_text("")
        path.chmod(0o600)
        _write(cls(str(path), chmod=0o644), 1)
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, name
