"""The execution-log record: created in the caller with its own id and time, so redelivery never duplicates it."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from flocklog.errors import SerializationError

__all__ = ["DEFAULT_MAX_RECORD_BYTES", "HOST", "MAX_DEPTH", "MAX_INT_BITS", "ExecutionRecord"]

HOST = socket.gethostname()

_VERSION_MASK = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_VERSION_BITS = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant


#: Random 128-bit values fetched per ``os.urandom`` call. ``os.urandom`` releases the GIL around its system call,
#: so one call per record handed the GIL to the sender thread in the middle of every ``log()``: profiled with 4
#: producers and a busy sender, that cost the caller ~19 us a record (0.5 us uncontended). One call per 256 ids
#: makes it rare; the bits are the same CSPRNG's, only fetched in bulk.
_IDS_PER_FETCH = 256
_ids: list[int] = []  # random values (version/variant bits set) for this process; list.pop is atomic
_ids_pid = -1  # the process that fetched _ids: a forked child must never use its parent's


def _fetch_ids() -> int:
    """Refill ``_ids`` (emptied first in a forked child, whose copy is its parent's) and return one fresh value."""
    global _ids_pid
    pid = os.getpid()
    if _ids_pid != pid:
        _ids.clear()
        _ids_pid = pid
    data = os.urandom(16 * _IDS_PER_FETCH)
    mask, bits, from_bytes = _VERSION_MASK, _VERSION_BITS, int.from_bytes
    _ids.extend([(from_bytes(data[i : i + 16], "big") & mask) | bits for i in range(16, len(data), 16)])
    return (from_bytes(data[:16], "big") & mask) | bits


_new = object.__new__
_set = object.__setattr__
_UUID = uuid.UUID
# An enum member read through its class costs ~200 ns (enum's property): once here, not once per id.
_SAFE = uuid.SafeUUID.unknown


def _uuid4_for(pid: int) -> uuid.UUID:
    """``uuid.uuid4()`` without ``UUID.__init__``'s argument parsing and without a system call per id, for a caller
    that already knows its pid (``build`` needs it for the record anyway): a fraction of the cost, in log().

    The random bits and the version/variant bits are exactly uuid4's (``os.urandom``, fetched
    :data:`_IDS_PER_FETCH` at a time); only the constructor is skipped by setting UUID's two slots directly, as
    ``UUID.__init__`` itself does. The pid check keeps a forked child from repeating the values its parent had
    fetched but not used. Checked once at import; any surprise (a future UUID layout) falls back to ``uuid.uuid4``.
    """
    try:
        if _ids_pid != pid:
            raise IndexError
        bits = _ids.pop()
    except IndexError:
        bits = _fetch_ids()
    value = _new(_UUID)
    _set(value, "int", bits)
    _set(value, "is_safe", _SAFE)
    return value


def _uuid4_fast() -> uuid.UUID:
    return _uuid4_for(os.getpid())


def _pick_uuid4() -> Callable[[], uuid.UUID]:
    try:
        probe = _uuid4_fast()
        if probe.version == 4 and probe.variant == uuid.RFC_4122 and uuid.UUID(str(probe)) == probe:
            return _uuid4_fast
    except Exception:
        pass
    return uuid.uuid4


new_id = _pick_uuid4()
_id_for: Callable[[int], uuid.UUID] = _uuid4_for if new_id is _uuid4_fast else (lambda _pid: uuid.uuid4())
_UTC = timezone.utc
_fromtimestamp = datetime.fromtimestamp


#: A record on the wire, in ``to_wire``'s order: its keys, and the type of each value exactly as ``to_wire`` and the
#: Celery batch (``encode_batch``'s rows) write them. A row or dict of exactly these types may skip ``from_wire``'s
#: conversions (``tuple(map(type, row)) == WIRE_TYPES``: one C-level pass, where it runs once per record).
WIRE_KEYS = ("id", "ts", "level", "logger", "message", "fields", "host", "pid")
WIRE_TYPES = (str, float, int, str, str, dict, str, int)


def uuid_from_text(text: Any) -> uuid.UUID:
    """``uuid.UUID(str(text))`` for the two forms flocklog writes (32 hex digits; the 36-character hyphenated
    form) without its argument parsing (its two slots are set, as it does); any other shape goes through
    ``uuid.UUID`` itself, which accepts or refuses it."""
    if type(text) is str:
        digits = text
        if len(text) == 36 and text[8] == text[13] == text[18] == text[23] == "-":
            digits = text.replace("-", "")
        if len(digits) == 32 and digits.isascii() and digits.isalnum():
            value = _new(uuid.UUID)
            _set(value, "int", int(digits, 16))  # isalnum lets g-z through: int() refuses them (ValueError)
            _set(value, "is_safe", _SAFE)
            return value
    return uuid.UUID(str(text))


#: The largest record :meth:`ExecutionRecord.build` accepts (UTF-8 bytes of the message, the field names and the
#: text values, plus 8 per other value: roughly its size as JSON). A record is one row: 256 KiB is far above any
#: execution event, and far below what makes one record a memory problem (a 10 MB field once took a producer to
#: 305 MB RSS); a batch of many large ones is split into tasks of at most 16 MiB by the Celery transport.
#: ``ExecutionLogger(max_record_bytes=...)`` or ``$FLOCKLOG_MAX_RECORD_BYTES`` changes it.
DEFAULT_MAX_RECORD_BYTES = 256 * 1024
#: Deeper nesting is refused: JSON encoders and PostgreSQL's jsonb recurse, and a stack overflow there would
#: sink a whole batch far from the call that made it.
MAX_DEPTH = 64
#: Integers longer than this (about 3,900 digits) are refused: Python refuses to print ints over 4,300 digits,
#: so the record could never be encoded on its way to the store.
MAX_INT_BITS = 13_000
_BIG = 1 << MAX_INT_BITS


class _Refused(Exception):
    """Why one value cannot be stored; turned into a SerializationError naming the record and the field."""


def _text_size(text: str) -> int:
    """UTF-8 size of ``text``; refuses what no store can hold (PostgreSQL's text and jsonb reject both)."""
    if "\x00" in text:
        raise _Refused("contains \\x00 (NUL), which no store can hold")
    if text.isascii():
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise _Refused("contains a lone surrogate (not valid Unicode text), which no store can hold") from None


def _level_number(level: object) -> int:
    """``logging``'s levels: a number, or a registered name such as ``"INFO"`` (any case)."""
    if type(level) is int:
        return level
    if isinstance(level, int) and not isinstance(level, bool):
        return int(level)
    if isinstance(level, str):
        number = logging.getLevelName(level.strip().upper())
        if isinstance(number, int):
            return number
    raise SerializationError(f"level {level!r} is neither a number nor a logging level name such as 'INFO'")


def _snapshot(value: Any, depth: int, size: list[int]) -> Any:
    """A copy of ``value`` made of plain JSON types only, so a caller that mutates its dict or list after
    ``log()`` returned changes nothing in the record; ``size`` accumulates the record's size estimate."""
    kind = type(value)
    if kind is str:
        size[0] += _text_size(value) + 2
        return value
    if kind is int or kind is bool or value is None:
        if kind is int and not -_BIG < value < _BIG:
            raise _Refused(f"an integer of {value.bit_length()} bits is too long to store (limit {MAX_INT_BITS})")
        size[0] += 8
        return value
    if kind is float:
        if not math.isfinite(value):
            raise _Refused(f"{value!r} is not a JSON number")
        size[0] += 8
        return value
    if depth >= MAX_DEPTH:
        raise _Refused(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        copy = {}
        for key, item in value.items():
            if isinstance(key, str):
                key = str.__str__(key)
                size[0] += _text_size(key) + 3
            elif key is None or isinstance(key, (int, float)):  # JSON turns these keys into text, as json does
                key = _STRICT.encode(_snapshot(key, depth + 1, size))
            else:
                raise _Refused(f"a key of type {type(key).__name__} cannot be a JSON object key")
            copy[key] = _snapshot(item, depth + 1, size)
        return copy
    if isinstance(value, (list, tuple)):
        return [_snapshot(item, depth + 1, size) for item in value]
    # Subclasses of the plain types (str enums, IntEnum, numpy-free float subclasses): stored as their base value.
    if isinstance(value, str):
        return _snapshot(str.__str__(value), depth, size)
    if isinstance(value, bool):
        return _snapshot(bool(value), depth, size)
    if isinstance(value, int):
        return _snapshot(int(value), depth, size)
    if isinstance(value, float):
        return _snapshot(float(value), depth, size)
    raise _Refused(f"a value of type {type(value).__name__} cannot be stored as JSON; pass str(value) or plain values")


_STRICT = json.JSONEncoder(allow_nan=False)


_MESSAGE = object()  # where a problem is: in the message, in a field (its name), or in the whole record
_RECORD = object()


def _checked_fields(message: str, fields: Mapping[str, Any], max_bytes: int) -> dict[str, Any]:
    """Validate and snapshot ``fields`` for a record whose message is ``message``; see :meth:`ExecutionRecord.build`.

    This runs in the caller's ``log()``: flat fields of ASCII text and plain scalars (the usual case) take the
    short inline loop, which copies nothing but the dict; anything else takes the full walk, which copies it.
    """
    where: object = _MESSAGE
    try:
        size = len(message) if message.isascii() and "\x00" not in message else _text_size(message)
        plain = type(fields) is dict
        if plain:
            for field, value in fields.items():
                kind = type(value)
                if (
                    type(field) is not str
                    or not field.isascii()
                    or "\x00" in field
                    or not (
                        (kind is str and value.isascii() and "\x00" not in value)
                        or (kind is int and -_BIG < value < _BIG)
                        or kind is bool
                        or value is None
                        or (kind is float and math.isfinite(value))
                    )
                ):
                    plain = False
                    break
                size += len(field) + (len(value) + 5 if kind is str else 12)
        if plain:
            copy = dict(fields)
        else:
            total = [len(message) if message.isascii() else _text_size(message)]
            copy = {}
            for field, value in fields.items():
                where = field
                if not isinstance(field, str):
                    raise _Refused(f"has a name of type {type(field).__name__}: field names must be text")
                total[0] += _text_size(field) + 3
                copy[str.__str__(field)] = _snapshot(value, 1, total)
            size = total[0]
        where = _RECORD
        if size > max_bytes:
            raise _Refused(
                f"is about {size:,} bytes, over the {max_bytes:,}-byte limit (max_record_bytes): "
                "store large payloads elsewhere and log a reference"
            )
    except _Refused as exc:
        place = "the message" if where is _MESSAGE else "the record" if where is _RECORD else f"field {where!r}"
        raise SerializationError(f"execution-log record {message[:60]!r}: {place}: {exc}") from None
    return copy


@dataclass(frozen=True, slots=True)
class ExecutionRecord:
    """One structured record. ``id`` and ``ts`` are set by the producer: the store's key is ``(id, ts)``."""

    level: int
    message: str
    logger: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    ts: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    host: str = HOST
    pid: int = field(default_factory=os.getpid)

    @classmethod
    def create(cls, level: int | str, message: object, logger: str = "", **fields: Any) -> ExecutionRecord:
        """Build and validate a record from keyword fields; see :meth:`build`."""
        return cls.build(level, message, logger, fields)

    @classmethod
    def build(
        cls,
        level: int | str,
        message: object,
        logger: str,
        fields: Mapping[str, Any],
        max_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> ExecutionRecord:
        """Build a record, or raise :class:`SerializationError` for one no store could hold.

        ``level`` is a number or a ``logging`` level name (``"INFO"``); ``message`` follows ``logging``'s rule
        (``str(message)``). Refused: fields JSON cannot hold, NaN/inf, text with ``\\x00`` or a lone surrogate
        (in the message, a field name or any value), nesting deeper than :data:`MAX_DEPTH`, integers over
        :data:`MAX_INT_BITS` bits, and records over ``max_bytes``. The fields are copied (deeply when nested):
        a dict the caller changes after ``log()`` returned does not change the record.
        """
        text = message if type(message) is str else str(message)
        checked = _checked_fields(text, fields, max_bytes)
        pid = os.getpid()  # one system call for the record and its id's fork check
        # Positional, with the factories inlined: keyword construction of a frozen dataclass costs 3x as much,
        # and this is on the caller's path.
        return cls(_level_number(level), text, logger, checked, _id_for(pid), datetime.now(_UTC), HOST, pid)

    def to_wire(self) -> dict[str, Any]:
        """Plain JSON types only: what the Celery task, the spool and the dead-letter files carry."""
        return {
            "id": str(self.id),
            "ts": self.ts.timestamp(),
            "level": self.level,
            "logger": self.logger,
            "message": self.message,
            "fields": self.fields,
            "host": self.host,
            "pid": self.pid,
        }

    @classmethod
    def from_wire_many(cls, items: list[Any]) -> list[ExecutionRecord]:
        """``[from_wire(item) for item in items]``, the records to_wire wrote (every key, plain types) built
        without from_wire's conversions: a spool replay reads thousands of them in the sender thread, which
        shares the GIL with the app (profiled: ~70 % of a spilling producer's sender CPU went to from_wire).
        Anything else goes through from_wire, which accepts, converts or refuses it exactly as before."""
        records: list[ExecutionRecord] = []
        for data in items:
            if type(data) is dict:
                try:
                    values = tuple(map(data.__getitem__, WIRE_KEYS))
                    if tuple(map(type, values)) == WIRE_TYPES:
                        id_, ts, level, logger, message, fields, host, pid = values
                        when = _fromtimestamp(ts, _UTC)
                        records.append(cls(level, message, logger, fields, uuid_from_text(id_), when, host, pid))
                        continue
                except Exception:  # a missing key, a bad id or time: from_wire says what, as it always did
                    pass
            records.append(cls.from_wire(data))
        return records

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ExecutionRecord:
        """Rebuild a record from the wire, rejecting anything that is not shaped like one."""
        try:
            fields = data.get("fields") or {}
            if not isinstance(fields, dict):
                raise TypeError("fields must be an object")
            return cls(
                id=uuid.UUID(str(data["id"])),
                ts=datetime.fromtimestamp(float(data["ts"]), timezone.utc),
                level=int(data["level"]),
                logger=str(data.get("logger", "")),
                message=str(data["message"]),
                fields=fields,
                host=str(data.get("host", "")),
                pid=int(data.get("pid", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SerializationError(f"not an execution-log record: {exc}") from None
