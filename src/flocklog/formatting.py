"""Record formatters: ``Formatter`` (byte-identical to ``logging.Formatter``, cheaper) and ``JSONFormatter``.

Bottom layer: imports only the standard library and :mod:`flocklog.errors`.

Why a JSON formatter of our own rather than adopting python-json-logger as an extra (both measured in
``benchmarks/json_format.py``): ours is small, has no dependency and costs a fraction as much per record in
the same run; it writes a UTC RFC 3339 timestamp (microseconds, ``Z``) on every record, keeps a fixed key order
with extras sorted, and never raises. python-json-logger 4.2 with the same fields writes no timestamp unless
asked (and then ``+00:00``), names keys after LogRecord attributes unless renamed, writes ``NaN`` (not JSON), and
lets a record whose ``%`` arguments do not fit raise into ``handleError`` (the record is lost). Adopting it would
mean a new extra *and* a wrapper to change those defaults; it remains usable with any flocklog handler.
"""

from __future__ import annotations

import json
import logging
import math
import time as _time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from flocklog.errors import ConfigError

__all__ = ["STANDARD_ATTRIBUTES", "Formatter", "JSONFormatter", "make_formatter"]

_localtime = _time.localtime
_modf = math.modf
_gmtime = _time.gmtime
_strftime = _time.strftime
_PercentStyle = logging.PercentStyle
_StrFormatStyle = logging.StrFormatStyle
_TemplateStyle = logging.StringTemplateStyle
_STDLIB_MSEC_FORMAT = "%s,%03d"
_MSECS = tuple(f"{m:03d}" for m in range(1000))  # "%03d" % m for every whole millisecond
_MAX_CACHED = float(2**40)  # far beyond year 9999; beyond it (or below 0, or NaN) take the stdlib path


class Formatter(logging.Formatter):
    """A drop-in ``logging.Formatter`` that produces the same bytes for less work per record.

    What it saves, without changing a byte of output:

    - ``formatTime``: the ``time.strftime`` result is reused while records stay within one second (the struct
      the stdlib converters return depends only on the whole second), keyed also on the converter, the date
      format and the time zone (``time.tzset()`` is noticed), and only for ``time.localtime``/``time.gmtime``
      converters — any other converter is called for every record, as the stdlib does.
    - ``formatMessage``: the format is applied to ``record.__dict__`` directly, without the style object's two
      method calls and ``**`` copy; any error is re-raised by the stdlib path itself, so messages are identical.
    - ``usesTime``: remembered for the style object and format string it was computed from.

    Every hook stays a hook: a subclass's ``formatTime``, ``formatMessage``, ``usesTime``, ``formatException``,
    ``formatStack``, ``converter``, ``default_time_format`` and ``default_msec_format`` are honoured, per
    instance or per class (``logging.Formatter.converter = time.gmtime`` included). Not noticed: a change of
    ``LC_TIME`` locale within a second already cached.

    Use it from dictConfig with ``{"()": "flocklog.Formatter", "format": ..., "style": "{"}``.
    """

    def __init__(
        self,
        fmt: str | None = None,
        datefmt: str | None = None,
        style: Literal["%", "{", "$"] = "%",
        validate: bool = True,
        *,
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(fmt, datefmt, style, validate, defaults=defaults)
        # Each cache is one tuple, read and replaced whole, so threads sharing this formatter (one formatter on
        # several handlers, each with its own lock) never see one second's key with another's text.
        # (second, pattern, converter, tzname tuple, text) of the last second formatted; see formatTime.
        self._time_cache: tuple[int, str, object, object, str] = (-1, "", None, None, "")
        self._uses_cache: tuple[object, object, bool] = (None, None, False)  # (style, its _fmt, usesTime())

    def format(self, record: logging.LogRecord) -> str:
        """The stdlib's ``format`` step for step (so every hook is called as it would be)."""
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        s = self.formatMessage(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            if s[-1:] != "\n":
                s = s + "\n"
            s = s + record.exc_text
        if record.stack_info:
            if s[-1:] != "\n":
                s = s + "\n"
            s = s + self.formatStack(record.stack_info)
        return s

    def usesTime(self) -> bool:
        style = self._style
        fmt = style._fmt
        cache = self._uses_cache
        if style is cache[0] and fmt is cache[1]:
            return cache[2]
        uses = style.usesTime()
        if type(style) in (_PercentStyle, _StrFormatStyle, _TemplateStyle):  # their answer depends on _fmt only
            self._uses_cache = (style, fmt, uses)
        return uses

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        converter = self.converter
        created = record.created
        if not (
            (converter is _localtime or converter is _gmtime)
            and type(created) is float
            and 0.0 <= created < _MAX_CACHED
        ):
            return super().formatTime(record, datefmt)
        pattern = datefmt or self.default_time_format
        second = int(created)
        zone = _time.tzname  # a new tuple after every time.tzset(): a changed TZ is noticed
        cache = self._time_cache
        if cache[0] != second or cache[1] != pattern or cache[2] is not converter or cache[3] is not zone:
            cache = (second, pattern, converter, zone, _strftime(pattern, converter(created)))
            self._time_cache = cache
        text = cache[4]
        if datefmt:
            return text
        msec_format = self.default_msec_format
        if not msec_format:
            return text
        msecs = record.msecs
        if msec_format == _STDLIB_MSEC_FORMAT and type(msecs) is float and 0.0 <= msecs < 1000.0:
            return f"{text},{_MSECS[int(msecs)]}"
        return msec_format % (text, msecs)

    def formatMessage(self, record: logging.LogRecord) -> str:
        style = self._style
        kind = type(style)
        try:
            defaults = style._defaults  # type: ignore[attr-defined]  # private since 3.10, present in all we support
            values: dict[str, Any] = defaults | record.__dict__ if defaults else record.__dict__
            if kind is _StrFormatStyle:
                return style._fmt.format_map(values)
            if kind is _PercentStyle:
                return style._fmt % values
            if kind is _TemplateStyle:
                text: str = style._tpl.substitute(values)  # type: ignore[attr-defined]  # narrowed by the `is` above
                return text
        except Exception:  # the stdlib path below raises the stdlib's own error for this record
            pass
        return style.format(record)


#: Attributes every ``LogRecord`` has (plus those formatters add); anything else on a record came from ``extra``.
STANDARD_ATTRIBUTES: frozenset[str] = frozenset(
    {
        *logging.LogRecord("", 0, "", 0, "", (), None).__dict__,
        "message",
        "asctime",
        "taskName",  # 3.12+
        "exc_text",
        "stack_info",
    }
)

_escape: Any = json.encoder.encode_basestring_ascii  # the C helper json.dumps itself uses for ASCII output
_JSON_FIXED = ("time", "level", "logger", "message", "pid", "process_name", "thread", "thread_name")
_JSON_TAIL = ("exception", "stack")


def _to_text(value: object) -> str:
    """What a value JSON cannot carry becomes: ``isoformat()`` for dates, ``str()``, else ``repr()``."""
    try:
        iso = getattr(value, "isoformat", None)
        if callable(iso):
            return str(iso())
        return str(value)
    except Exception:
        try:
            return repr(value)
        except Exception:
            return f"<unrepresentable {type(value).__name__}>"


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, pid, thread, extras, exception.

    Key order is fixed: ``time`` (UTC, RFC 3339, microseconds, ``Z``), ``level``, ``logger``, ``message``,
    ``pid``, ``process_name``, ``thread``, ``thread_name``, then the standard attributes asked for in
    ``attributes`` (e.g. ``("module", "lineno")``), then every ``extra`` field sorted by name (one that collides
    with a key above is written as ``extra_<name>``), then ``exception`` and ``stack`` when present.

    The output is pure ASCII (``ensure_ascii``), so no byte of a record is a line break for any reader. A value
    JSON cannot carry is written as text (``_to_text``); NaN and infinities as text too (valid JSON). Nothing
    raises: a message whose ``%`` arguments do not fit is written as its template, with ``format_error`` saying
    why; each such record is counted in :attr:`errors` (see :meth:`stats`).

    ``fmt``, ``datefmt``, ``style``, ``validate``, ``defaults`` are accepted so dictConfig's ``class`` form works;
    they do not change the output.
    """

    def __init__(
        self,
        fmt: str | None = None,
        datefmt: str | None = None,
        style: Literal["%", "{", "$"] = "%",
        validate: bool = True,
        *,
        defaults: Mapping[str, Any] | None = None,
        attributes: Sequence[str] = (),
    ) -> None:
        super().__init__(fmt, datefmt, style, validate, defaults=defaults)
        unknown = [a for a in attributes if a not in STANDARD_ATTRIBUTES]
        if unknown:
            raise ConfigError(
                f"JSONFormatter(attributes=...) takes standard LogRecord attribute names; not {unknown}: "
                "extra fields are written without being named"
            )
        self.attributes = tuple(a for a in attributes if a not in ("message", "asctime"))
        self._taken = frozenset(_JSON_FIXED + _JSON_TAIL + ("format_error",) + self.attributes)
        self._encode = json.JSONEncoder(
            ensure_ascii=True, allow_nan=False, separators=(",", ":"), default=_to_text
        ).encode
        self._second_cache: tuple[int | None, str] = (None, "")  # one tuple: see Formatter.__init__
        #: Records written with a fallback (message arguments that did not fit, or values JSON refused).
        self.errors = 0

    def stats(self) -> dict[str, int]:
        """Counters for status pages: ``errors`` is records written with a fallback (never dropped)."""
        return {"errors": self.errors}

    def _timestamp(self, created: float) -> str:
        """``created`` as ``datetime.fromtimestamp(created, UTC)`` would write it (microseconds rounded half-even)."""
        fraction, whole = _modf(created)
        second, micro = int(whole), round(fraction * 1e6)
        if micro >= 1_000_000:
            second, micro = second + 1, micro - 1_000_000
        elif micro < 0:
            second, micro = second - 1, micro + 1_000_000
        cache = self._second_cache
        if second != cache[0]:
            cache = (second, _strftime("%Y-%m-%dT%H:%M:%S", _gmtime(second)))
            self._second_cache = cache
        return f"{cache[1]}.{micro:06d}Z"

    def format(self, record: logging.LogRecord) -> str:
        try:
            line = self._fast(record)
            return line if line is not None else self._format(record)
        except Exception as exc:  # a last resort: this formatter's promise is one line per record, always
            self.errors += 1
            return self._encode(
                {
                    "time": self._safe_timestamp(record),
                    "level": _to_text(getattr(record, "levelname", "")),
                    "logger": _to_text(getattr(record, "name", "")),
                    "message": _to_text(getattr(record, "msg", "")),
                    "format_error": f"{type(exc).__name__}: {_to_text(exc)}",
                }
            )

    def _safe_timestamp(self, record: logging.LogRecord) -> str:
        try:
            return self._timestamp(float(record.created))
        except Exception:
            return _to_text(getattr(record, "created", ""))

    def _fast(self, record: logging.LogRecord) -> str | None:
        """The usual record written as text directly; ``None`` sends anything unusual to :meth:`_format`.

        Same keys, order and bytes as ``_format`` (a test holds them equal), at about half the cost: no dict, and
        strings and ints rendered without the generic encoder.
        """
        try:
            message = record.getMessage()
        except Exception:
            return None  # _format writes it with format_error
        fields = record.__dict__
        level, name = fields.get("levelname"), fields.get("name")
        pid, process_name = fields.get("process"), fields.get("processName")
        thread, thread_name = fields.get("thread"), fields.get("threadName")
        if not (
            type(message) is str
            and type(level) is str
            and type(name) is str
            and type(process_name) is str
            and type(thread_name) is str
            and type(pid) is int
            and type(thread) is int
        ):
            return None
        record.message = message
        esc = _escape
        parts = [
            f'{{"time":"{self._timestamp(record.created)}","level":{esc(level)},"logger":{esc(name)},'
            f'"message":{esc(message)},"pid":{pid},"process_name":{esc(process_name)},"thread":{thread},'
            f'"thread_name":{esc(thread_name)}'
        ]
        encode = self._encode
        try:
            for attr in self.attributes:
                parts.append(f",{esc(attr)}:{encode(fields.get(attr))}")
            extra = fields.keys() - STANDARD_ATTRIBUTES
            if extra:
                taken = self._taken
                for key in sorted(extra):
                    label = f"extra_{key}" if key in taken else key
                    value = fields[key]
                    kind = type(value)  # the two commonest kinds without the generic encoder's set-up
                    text = esc(value) if kind is str else int.__repr__(value) if kind is int else encode(value)
                    parts.append(f",{esc(label)}:{text}")
        except Exception:
            return None  # a value JSON refuses: _format writes it as text and counts it
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        exc_text = record.exc_text
        if exc_text:
            if type(exc_text) is not str:
                return None
            parts.append(f',"exception":{esc(exc_text)}')
        if record.stack_info:
            stack = self.formatStack(record.stack_info)
            if type(stack) is not str:
                return None
            parts.append(f',"stack":{esc(stack)}')
        parts.append("}")
        return "".join(parts)

    def _format(self, record: logging.LogRecord) -> str:
        error: str | None = None
        try:
            message = record.getMessage()
        except Exception as exc:
            message = _to_text(record.msg)
            error = f"{type(exc).__name__}: {_to_text(exc)} (args {_to_text(record.args)})"
        record.message = message
        out: dict[str, Any] = {
            "time": self._timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
            "pid": record.process,
            "process_name": record.processName,
            "thread": record.thread,
            "thread_name": record.threadName,
        }
        if error is not None:
            out["format_error"] = error
        fields = record.__dict__
        for name in self.attributes:
            out[name] = fields.get(name)
        extra = fields.keys() - STANDARD_ATTRIBUTES
        if extra:
            taken = self._taken
            for name in sorted(extra):
                out[f"extra_{name}" if name in taken else name] = fields[name]
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        if error is not None:
            self.errors += 1
        try:
            return self._encode(out)
        except (TypeError, ValueError):  # NaN/inf, circular values, non-string keys: encode each value apart
            if error is None:
                self.errors += 1
            return self._encode({key: self._one_value(value) for key, value in out.items()})

    def _one_value(self, value: Any) -> Any:
        try:
            self._encode(value)
        except (TypeError, ValueError, RecursionError):
            return _to_text(value)
        return value


def make_formatter(
    format: str | None = None,
    *,
    style: Literal["%", "{", "$"] = "{",
    datefmt: str | None = None,
) -> logging.Formatter:
    """The formatter ``configure()`` and the integrations install: ``"json"`` gives :class:`JSONFormatter`.

    Anything else is a :class:`Formatter` format string in ``style``; a format that does not fit its style
    raises :class:`~flocklog.ConfigError` saying which style was expected.
    """
    if format == "json":
        return JSONFormatter()
    try:
        return Formatter(format, datefmt, style=style)
    except ValueError as exc:  # "invalid format: no fields" says nothing about which style was expected
        raise ConfigError(
            f"format {format!r} is not a valid {style}-style format ({exc}): pass style='%' for "
            "'%(message)s' formats, style='{' for '{message}' ones, or format='json'"
        ) from None
