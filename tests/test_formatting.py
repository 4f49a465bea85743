"""flocklog.Formatter is byte-identical to logging.Formatter; flocklog.JSONFormatter writes one safe line per record."""

from __future__ import annotations

import datetime
import json
import logging
import logging.config
import math
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flocklog
from flocklog.errors import ConfigError
from flocklog.formatting import STANDARD_ATTRIBUTES, Formatter, JSONFormatter, make_formatter

FORMATS = {
    "%": [
        "%(asctime)s %(levelname)s [PID:%(process)d] %(message)s",
        "%(asctime)s.%(msecs)03d %(name)s:%(lineno)d %(message)r",
        "%(levelname)-8s %(message)s",  # no time at all
        "[%(asctime)s] %(relativeCreated)d %(threadName)s %(funcName)s %(message)s",
    ],
    "{": [
        "{levelname} {asctime} {module} [PID:{process}, TID:{thread}] {message}",
        "{asctime}.{msecs:03.0f} {name!r:>10} {message}",
        "{message}",
    ],
    "$": [
        "$asctime $levelname ${name}: $message",
        "${asctime} [$process] $message",
        "$message",
    ],
}
DATEFMTS = [
    None,
    "%Y-%m-%d %H:%M:%S",
    "%H:%M:%S",
    "%Y-%m-%dT%H:%M:%S%z",
    "%d/%b/%Y:%H:%M:%S %Z",
    "%a %b %d %j %U %p %I",
    "%s",
    "literal %% and %f",
]
MSEC_FORMATS = ["%s,%03d", None, "%s.%03d", "%s.%06.2f"]

# Seconds from before the epoch of most logs to far in the future; many per second and across boundaries.
created_values = st.one_of(
    st.floats(min_value=0.0, max_value=4_102_444_800.0, allow_nan=False),
    st.integers(min_value=0, max_value=4_102_444_800).map(float),
    st.integers(min_value=1_700_000_000_000, max_value=1_700_000_100_000).map(lambda ms: ms / 1000),
    st.integers(min_value=1_700_000_000_000_000, max_value=1_700_000_003_000_000).map(lambda us: us / 1e6),
    st.sampled_from([1_700_000_000.999999, 1_700_000_000.9999999, 1_700_000_001.0, 1_699_999_999.9995]),
)


def _msecs_of(created: float) -> float:
    """What LogRecord.__init__ of this Python computes for msecs (the formula changed in 3.13)."""
    if sys.version_info >= (3, 13):
        ns = round(created * 1e9)
        return (ns % 1_000_000_000) // 1_000_000 + 0.0
    return int((created - int(created)) * 1000) + 0.0


def _record(created: float, msecs: float | None = None, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("app.module", logging.INFO, "/src/app/module.py", 42, "hello %s", ("world",), None)
    record.created = created
    record.msecs = _msecs_of(created) if msecs is None else msecs
    record.__dict__.update(extra)
    return record


def _copy(record: logging.LogRecord) -> logging.LogRecord:
    return logging.makeLogRecord(dict(record.__dict__))


def _pair(
    fmt: str | None,
    datefmt: str | None,
    style: Any,
    converter: Callable[..., time.struct_time] = time.localtime,
    msec_format: str | None = "%s,%03d",
    **kwargs: Any,
) -> tuple[logging.Formatter, Formatter]:
    ours = Formatter(fmt, datefmt, style, **kwargs)
    theirs = logging.Formatter(fmt, datefmt, style, **kwargs)
    for formatter in (ours, theirs):
        formatter.converter = converter  # type: ignore[method-assign]  # the documented per-instance override
        formatter.default_msec_format = msec_format
    return theirs, ours


def _assert_same(theirs: logging.Formatter, ours: Formatter, records: list[logging.LogRecord]) -> None:
    for record in records:
        expected = theirs.format(_copy(record))
        assert ours.format(_copy(record)) == expected, (record.created, record.msecs)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    style=st.sampled_from(["%", "{", "$"]),
    which=st.integers(min_value=0, max_value=3),
    datefmt=st.sampled_from(DATEFMTS),
    msec_format=st.sampled_from(MSEC_FORMATS),
    utc=st.booleans(),
    created=st.lists(created_values, min_size=1, max_size=30),
    sorted_times=st.booleans(),
)
def test_formatter_output_is_byte_identical_to_the_stdlib(
    style: str,
    which: int,
    datefmt: str | None,
    msec_format: str | None,
    utc: bool,
    created: list[float],
    sorted_times: bool,
) -> None:
    fmt = FORMATS[style][which % len(FORMATS[style])]
    theirs, ours = _pair(fmt, datefmt, style, time.gmtime if utc else time.localtime, msec_format)
    _assert_same(theirs, ours, [_record(c) for c in (sorted(created) if sorted_times else created)])


@settings(max_examples=200, deadline=None)
@given(
    msecs=st.one_of(
        st.floats(min_value=0.0, max_value=1000.0),
        st.floats(min_value=999.0, max_value=1000.0),
        st.sampled_from([0.0, 0.5, 0.9999999, 499.5, 999.0, 999.5, 999.9999999, -0.5, -1.5, 1000.0]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-5, 2000).map(float),
    ),
    msec_format=st.sampled_from(MSEC_FORMATS),
)
def test_formatter_writes_any_msecs_value_as_the_stdlib_does(msecs: float, msec_format: str | None) -> None:
    theirs, ours = _pair("%(asctime)s %(message)s", None, "%", msec_format=msec_format)
    for record in (_record(1_700_000_000.5, msecs), _record(1_700_000_000.25, msecs)):
        try:
            expected: str | type[BaseException] = theirs.format(_copy(record))
        except Exception as exc:
            expected = type(exc)
        if isinstance(expected, str):
            assert ours.format(_copy(record)) == expected
        else:
            with pytest.raises(expected):
                ours.format(_copy(record))


def test_records_in_one_second_and_across_its_boundary_get_their_own_times() -> None:
    theirs, ours = _pair("%(asctime)s %(message)s", None, "%")
    base = 1_700_000_000.0
    times = [base + 0.001 * i for i in range(0, 3000, 7)] + [base + 0.9999999, base + 1.0, base - 0.0000001]
    _assert_same(theirs, ours, [_record(c) for c in times])
    _assert_same(theirs, ours, [_record(c) for c in reversed(times)])


def test_created_as_an_int_or_out_of_the_cached_range_takes_the_stdlib_path() -> None:
    theirs, ours = _pair("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S", "%")
    records = [_record(1_700_000_000.5), _record(1_700_000_000.5)]
    records[1].created = 1_700_000_000  # an int, as from makeLogRecord over a network
    _assert_same(theirs, ours, records)
    for odd in (-1.5, -0.25, float("nan"), 1e20, 2.0**40):
        record = _record(1_700_000_000.0)
        record.created = odd
        try:
            expected = theirs.format(_copy(record))
        except Exception as exc:
            with pytest.raises(type(exc)):
                ours.format(_copy(record))
        else:
            assert ours.format(_copy(record)) == expected


def test_defaults_fill_fields_a_record_lacks_in_every_style() -> None:
    for style, fmt in (("%", "%(asctime)s %(user)s %(message)s"), ("{", "{asctime} {user} {message}")):
        theirs, ours = _pair(fmt, None, style, defaults={"user": "-"})
        _assert_same(theirs, ours, [_record(1_700_000_000.1), _record(1_700_000_000.2, user="ann")])
    theirs, ours = _pair("$asctime $user $message", None, "$", defaults={"user": "-"})
    _assert_same(theirs, ours, [_record(1_700_000_000.1), _record(1_700_000_000.2, user="ann")])


def test_a_missing_field_raises_the_stdlib_error() -> None:
    for style, fmt in (("%", "%(user)s %(message)s"), ("{", "{user} {message}"), ("$", "$user $message")):
        theirs, ours = _pair(fmt, None, style)
        with pytest.raises(ValueError) as expected:
            theirs.format(_record(1_700_000_000.0))
        with pytest.raises(ValueError) as got:
            ours.format(_record(1_700_000_000.0))
        assert str(got.value) == str(expected.value)


def test_validate_rejects_and_accepts_what_the_stdlib_does() -> None:
    with pytest.raises(ValueError, match="invalid format"):
        Formatter("%(message)s", style="{")
    Formatter("%(message)s", style="{", validate=False)
    with pytest.raises(ValueError):
        logging.Formatter("no fields", style="%")
    with pytest.raises(ValueError):
        Formatter("no fields", style="%")


def _failing() -> None:
    raise RuntimeError("boom\nsecond line")


def test_exc_info_and_stack_info_are_appended_as_the_stdlib_appends_them() -> None:
    try:
        _failing()
    except RuntimeError:
        exc_info = sys.exc_info()
    for fmt in ("%(asctime)s %(message)s", "%(message)s\n"):
        theirs, ours = _pair(fmt, None, "%")
        records = [
            _record(1_700_000_000.5, exc_info=exc_info, exc_text=None),
            _record(1_700_000_000.6, stack_info="Stack (most recent call last):\n  File x"),
            _record(1_700_000_000.7, exc_info=exc_info, exc_text=None, stack_info="Stack:\n  here"),
            _record(1_700_000_000.8, exc_text="cached text"),
        ]
        _assert_same(theirs, ours, records)


def test_subclass_hooks_are_still_called() -> None:
    calls: list[str] = []

    class Custom(Formatter):
        default_time_format = "%H:%M:%S"
        default_msec_format = "%s.%03d"

        def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
            calls.append("time")
            return "T" + super().formatTime(record, datefmt)

        def formatException(self, ei: Any) -> str:
            calls.append("exc")
            return "EXC"

        def formatStack(self, stack_info: str) -> str:
            calls.append("stack")
            return "STACK"

    class Reference(logging.Formatter):
        default_time_format = "%H:%M:%S"
        default_msec_format = "%s.%03d"

        def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
            return "T" + super().formatTime(record, datefmt)

        def formatException(self, ei: Any) -> str:
            return "EXC"

        def formatStack(self, stack_info: str) -> str:
            return "STACK"

    try:
        _failing()
    except RuntimeError:
        exc_info = sys.exc_info()
    record = _record(1_700_000_000.123, exc_info=exc_info, stack_info="s")
    assert Custom("%(asctime)s %(message)s").format(_copy(record)) == Reference("%(asctime)s %(message)s").format(
        _copy(record)
    )
    assert calls == ["time", "exc", "stack"]


def test_a_class_wide_converter_and_a_custom_converter_are_honoured() -> None:
    class Utc(Formatter):
        converter = time.gmtime

    class UtcReference(logging.Formatter):
        converter = time.gmtime

    records = [_record(1_700_000_000.5 + i * 0.4) for i in range(10)]
    _assert_same(UtcReference("%(asctime)s %(message)s"), Utc("%(asctime)s %(message)s"), records)  # type: ignore[arg-type]

    shifted: Callable[[float | None], time.struct_time] = lambda t: time.gmtime((t or 0) + 0.5)  # noqa: E731
    theirs, ours = _pair("%(asctime)s %(message)s", None, "%", converter=shifted)
    _assert_same(theirs, ours, records)

    saved = logging.Formatter.converter
    logging.Formatter.converter = time.gmtime  # type: ignore[assignment]  # the documented class-wide idiom
    try:
        _assert_same(logging.Formatter("%(asctime)s %(message)s"), Formatter("%(asctime)s %(message)s"), records)
    finally:
        logging.Formatter.converter = saved  # type: ignore[method-assign]


def test_changing_datefmt_or_formats_after_construction_is_noticed() -> None:
    theirs, ours = _pair("%(asctime)s %(message)s", None, "%")
    record = _record(1_700_000_000.5)
    _assert_same(theirs, ours, [record])
    for formatter in (theirs, ours):
        formatter.datefmt = "%H:%M"
    _assert_same(theirs, ours, [record])
    for formatter in (theirs, ours):
        formatter.datefmt = None
        formatter.default_time_format = "%d %H"
    _assert_same(theirs, ours, [record])
    for formatter in (theirs, ours):
        formatter._style = logging.StrFormatStyle("{message} no time")
    _assert_same(theirs, ours, [record])


TZ_SCRIPT = textwrap.dedent(
    """
    import logging, os, sys, time
    from flocklog.formatting import Formatter

    def record(created):
        r = logging.LogRecord("app", 20, "m.py", 1, "x %s", ("y",), None)
        r.created, r.msecs = created, int((created - int(created)) * 1000) + 0.0
        return r

    # The 2026 transitions of Europe/London and America/New_York, a second apart across each, both directions.
    edges = [1774746000.0, 1792890000.0, 1772953200.0, 1793512800.0]
    times = [e + d / 4 for e in edges for d in range(-12, 13)]
    bad = 0
    home = os.environ["TZ"]
    for datefmt in (None, "%Y-%m-%d %H:%M:%S %z %Z", "%H:%M:%S%z", "%Z"):
        for conv in (time.localtime, time.gmtime):
            fmt = "%(asctime)s %(message)s"
            ours, theirs = Formatter(fmt, datefmt), logging.Formatter(fmt, datefmt)
            ours.converter = theirs.converter = conv
            for t in times:
                for zone in (home, "UTC", home):  # time.tzset() between two records of one second is noticed
                    os.environ["TZ"] = zone
                    time.tzset()
                    a, b = ours.format(record(t)), theirs.format(record(t))
                    if a != b:
                        bad += 1
                        print("MISMATCH", zone, datefmt, t, repr(a), repr(b))
    print("checked", len(times), "bad", bad)
    sys.exit(1 if bad else 0)
    """
)


@pytest.mark.parametrize("zone", ["Europe/London", "America/New_York"])
def test_local_time_in_a_dst_zone_matches_the_stdlib_across_transitions(zone: str) -> None:
    if not Path("/usr/share/zoneinfo", zone).exists():
        pytest.skip(f"no tz database entry for {zone}")
    env = {**os.environ, "TZ": zone}
    done = subprocess.run(
        [sys.executable, "-c", TZ_SCRIPT], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bad 0" in done.stdout


def test_dictconfig_builds_it_by_factory_and_by_class(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "factory": {"()": "flocklog.Formatter", "format": "{levelname} {message}", "style": "{"},
                "cls": {"class": "flocklog.Formatter", "format": "%(levelname)s %(message)s"},
                "json": {"()": "flocklog.JSONFormatter"},
            },
            "handlers": {
                "file": {"class": "logging.FileHandler", "filename": str(path), "formatter": "factory"},
                "other": {"class": "logging.NullHandler", "formatter": "cls"},
                "j": {"class": "logging.NullHandler", "formatter": "json"},
            },
            "loggers": {"dictconfig.test": {"handlers": ["file", "other", "j"], "level": "INFO", "propagate": False}},
        }
    )
    logger = logging.getLogger("dictconfig.test")
    try:
        assert [type(h.formatter) for h in logger.handlers] == [Formatter, Formatter, JSONFormatter]
        logger.info("through %s", "dictConfig")
        logger.handlers[0].flush()
        assert path.read_text() == "INFO through dictConfig\n"
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()


def test_make_formatter_gives_json_or_a_checked_format() -> None:
    assert isinstance(make_formatter("json"), JSONFormatter)
    plain = make_formatter("{levelname} {message}")
    assert type(plain) is Formatter
    assert plain.format(_record(1_700_000_000.0)) == "INFO hello world"
    assert make_formatter("%(message)s", style="%").format(_record(1.0)) == "hello world"
    with pytest.raises(ConfigError, match="style='%'"):
        make_formatter("%(message)s")
    assert {"Formatter", "JSONFormatter", "make_formatter"} <= set(flocklog.__all__)
    assert flocklog.Formatter is Formatter


# --- JSONFormatter -----------------------------------------------------------------------------------------------

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def _json(formatter: JSONFormatter, record: logging.LogRecord) -> dict[str, Any]:
    line = formatter.format(record)
    assert "\n" not in line and "\r" not in line
    assert len(line.splitlines()) == 1
    assert line.isascii()
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def test_json_record_has_the_fixed_keys_in_a_fixed_order() -> None:
    record = _record(1_700_000_000.123456)
    out = _json(JSONFormatter(), record)
    assert list(out) == ["time", "level", "logger", "message", "pid", "process_name", "thread", "thread_name"]
    assert out["time"] == "2023-11-14T22:13:20.123456Z"
    assert (out["level"], out["logger"], out["message"]) == ("INFO", "app.module", "hello world")
    assert (out["pid"], out["thread"]) == (record.process, record.thread)
    assert (out["process_name"], out["thread_name"]) == (record.processName, record.threadName)


@settings(max_examples=300, deadline=None)
@given(created=created_values)
def test_json_time_is_utc_rfc3339_with_microseconds_matching_datetime(created: float) -> None:
    formatter = JSONFormatter()
    for at in (created, created + 0.5, created):  # the cached second is reused and replaced correctly
        stamp = _json(formatter, _record(at))["time"]
        assert RFC3339_UTC.match(stamp), stamp
        expected = datetime.datetime.fromtimestamp(at, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert stamp == expected


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_json_extras_are_sorted_and_anything_json_refuses_becomes_text() -> None:
    circular: list[Any] = []
    circular.append(circular)
    formatter = JSONFormatter(attributes=("module", "lineno"))
    record = _record(
        1_700_000_000.0,
        zeta=1,
        alpha={"nested": [1, 2.5, None, True]},
        when=datetime.datetime(2026, 1, 2, 3, 4, 5),
        blob=b"\x00\xff",
        things={3},
        nan=math.nan,
        loop=circular,
        bad=Unprintable(),
        time="user's own time field",
    )
    out = _json(formatter, record)
    assert list(out)[8:] == [
        "module",
        "lineno",
        "alpha",
        "bad",
        "blob",
        "loop",
        "nan",
        "things",
        "extra_time",
        "when",
        "zeta",
    ]  # extras by their own name
    assert out["module"] == "module" and out["lineno"] == 42
    assert out["alpha"] == {"nested": [1, 2.5, None, True]}
    assert out["when"] == "2026-01-02T03:04:05"
    assert out["blob"] == "b'\\x00\\xff'" and out["things"] == "{3}" and out["nan"] == "nan"
    assert out["bad"] == "<unrepresentable Unprintable>"
    assert out["extra_time"] == "user's own time field"
    assert isinstance(out["loop"], str)
    assert formatter.stats()["errors"] == 1  # written with a fallback: counted, not dropped


def test_json_escapes_every_line_break_inside_a_message() -> None:
    message = "one\ntwo\rthree\u2028four\u2029five\x85six\x0bseven\x1cé☃"
    out = _json(JSONFormatter(), _record(1_700_000_000.0, msg=message, args=()))
    assert out["message"] == message


def test_json_carries_exception_and_stack_text_and_caches_exc_text() -> None:
    try:
        _failing()
    except RuntimeError:
        exc_info = sys.exc_info()
    record = _record(1_700_000_000.0, exc_info=exc_info, exc_text=None, stack_info="Stack:\n  here")
    out = _json(JSONFormatter(), record)
    assert list(out)[-2:] == ["exception", "stack"]
    assert out["exception"].startswith("Traceback") and "RuntimeError: boom\nsecond line" in out["exception"]
    assert out["stack"] == "Stack:\n  here"
    assert record.exc_text == out["exception"]  # other handlers reuse it, as with the stdlib formatter


def test_json_never_raises_on_a_message_that_cannot_be_formatted() -> None:
    formatter = JSONFormatter()
    out = _json(formatter, _record(1_700_000_000.0, msg="%d items", args=("many",)))
    assert out["message"] == "%d items"
    assert out["format_error"].startswith("TypeError") and "many" in out["format_error"]
    out = _json(formatter, _record(1_700_000_000.0, msg=Unprintable(), args=()))
    assert out["message"] == "<unrepresentable Unprintable>" and "no str" in out["format_error"]
    broken = _record(1_700_000_000.0)
    del broken.__dict__["levelname"]
    assert _json(formatter, broken)["format_error"].startswith("AttributeError")
    out = _json(formatter, _record(1_700_000_000.0, msg=RaisesUnprintable(), args=()))
    assert out["format_error"] == "UnprintableError: <unrepresentable UnprintableError> (args ())"
    assert formatter.stats() == {"errors": 4}


def test_json_never_raises_even_when_a_hook_raises_an_unprintable_error() -> None:
    class Failing(JSONFormatter):
        def formatException(self, ei: Any) -> str:
            raise UnprintableError

    try:
        _failing()
    except RuntimeError:
        exc_info = sys.exc_info()
    formatter = Failing()
    out = _json(formatter, _record(1_700_000_000.0, exc_info=exc_info, exc_text=None))
    assert out["format_error"] == "UnprintableError: <unrepresentable UnprintableError>"
    assert out["message"] == "hello %s" and formatter.stats() == {"errors": 1}


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str either")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


class RaisesUnprintable:
    def __str__(self) -> str:
        raise UnprintableError


def test_json_unknown_attribute_names_are_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError, match="extra fields"):
        JSONFormatter(attributes=("user",))
    assert "taskName" in STANDARD_ATTRIBUTES and "message" in STANDARD_ATTRIBUTES


@pytest.fixture
def json_logger(tmp_path: Path) -> Iterator[tuple[logging.Logger, Path]]:
    path = tmp_path / "app.jsonl"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JSONFormatter())
    logger = logging.getLogger(f"flocklog.test.json.{id(path)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, path
    logger.removeHandler(handler)
    handler.close()


def test_json_lines_through_a_real_file_handler_parse_one_per_record(json_logger: tuple[logging.Logger, Path]) -> None:
    logger, path = json_logger
    logger.info("plain")
    logger.warning("with extra", extra={"request_id": "r-1", "user": {"id": 7}})
    try:
        _failing()
    except RuntimeError:
        logger.exception("failed\nbadly")
    for handler in logger.handlers:
        handler.flush()
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    parsed = [json.loads(line) for line in lines[:-1]]
    assert [p["message"] for p in parsed] == ["plain", "with extra", "failed\nbadly"]
    assert parsed[1]["request_id"] == "r-1" and parsed[1]["user"] == {"id": 7}
    assert "RuntimeError: boom" in parsed[2]["exception"]
    assert [p["level"] for p in parsed] == ["INFO", "WARNING", "ERROR"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    message=st.text(),
    name=st.text(min_size=1),
    extras=st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), json_values, max_size=5),
    exc_text=st.none() | st.text(min_size=1),
    stack=st.none() | st.text(min_size=1),
    process_name=st.none() | st.text(),
)
def test_json_fast_path_writes_what_the_general_path_writes(
    message: str,
    name: str,
    extras: dict[str, Any],
    exc_text: str | None,
    stack: str | None,
    process_name: str | None,
) -> None:
    extras = {k: v for k, v in extras.items() if k not in STANDARD_ATTRIBUTES}
    record = _record(1_700_000_000.25, msg=message, args=(), name=name, exc_text=exc_text, stack_info=stack)
    record.processName = process_name  # type: ignore[assignment]  # None when logging.logMultiprocessing is off
    record.__dict__.update(extras)
    formatter = JSONFormatter(attributes=("lineno", "funcName", "taskName"))
    fast = formatter.format(_copy(record))
    general = formatter._format(_copy(record))
    assert fast == general
    assert json.loads(fast)["message"] == message
    assert formatter.errors == 0


def test_one_formatter_shared_by_threads_gives_each_record_its_own_time() -> None:
    """A dictConfig formatter is shared by every handler naming it, and each handler has its own lock."""
    ours, theirs = Formatter("%(asctime)s %(message)s"), logging.Formatter("%(asctime)s %(message)s")
    json_formatter = JSONFormatter()
    times = [1_700_000_000.5 + k + k / 1000 for k in range(8)]
    expected = {t: theirs.format(_record(t)) for t in times}
    expected_json = {
        t: datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ") for t in times
    }
    wrong: list[tuple[float, str]] = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)

    def work(offset: int) -> None:
        for i in range(3000):
            t = times[(i + offset) % len(times)]
            text = ours.format(_record(t))
            stamp = json.loads(json_formatter.format(_record(t)))["time"]
            if text != expected[t] or stamp != expected_json[t]:
                wrong.append((t, text))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        sys.setswitchinterval(interval)
    assert not any(thread.is_alive() for thread in threads)
    assert wrong == []
