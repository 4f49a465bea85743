"""The hub's wire format: length-prefixed msgpack frames, optionally MAC'd, and the record codec (never pickle).

A frame on the wire is ``uint32 length`` + payload; with a shared secret the payload is a 32-byte HMAC-SHA256 tag
followed by the msgpack body. The tag covers the connection's nonce (sent by the hub in its hello), the direction
and a per-direction frame counter, so a frame can neither be forged nor replayed into another connection or
position. Decoding only ever builds plain data (str, int, float, bytes, list, dict) and type-checks every field.
One concept, the bytes on the wire, over ~450 lines: the frame and the record inside it are checked against each
other's limits (a record is cut to fit a frame), and both ends must agree on every line here. No state.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import operator
import struct
import sys
from collections.abc import Callable
from typing import Any

import msgpack

from flocklog.errors import FrameError

HEADER = struct.Struct(">I")
MAC_SIZE = 32
DEFAULT_MAX_FRAME = 1024 * 1024
PROTOCOL_VERSION = 1
TO_HUB = b"C"
TO_CLIENT = b"H"
TRUNCATION_MARKER = " ...[flocklog: truncated {n} bytes]"

# Record fields and the types the hub accepts for each; anything else is a malformed frame.
_STR_FIELDS = ("name", "levelname", "msg", "processName", "threadName", "module", "funcName")
_INT_FIELDS = ("levelno", "lineno")
_OPT_INT_FIELDS = ("process", "thread")
_OPT_STR_FIELDS = ("exc_text", "stack_info")
_SCALARS = (str, int, float, bool, type(None))
# On the wire a record is an array in this order (plus ``extra``, a map or nil): no key strings to pack or parse.
ORDER = (
    "name",
    "levelno",
    "levelname",
    "msg",
    "created",
    "process",
    "processName",
    "thread",
    "threadName",
    "module",
    "lineno",
    "funcName",
    "exc_text",
    "stack_info",
    "extra",
)
# Attributes every LogRecord has; anything else on a record is an "extra" (logger.info(..., extra={...})).
STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_MAX_EXTRA_DEPTH = 4
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
# ``created`` values a formatter can turn into a date (time.localtime overflows far beyond year 9999).
_CREATED_MIN, _CREATED_MAX = -1e10, 2.5e11


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]  # msgpack is untyped


def packer() -> Callable[[Any], bytes]:
    """A :func:`pack` of one's own for a hot path of ONE thread: it keeps its buffer from call to call.

    ``msgpack.packb`` builds a packer, and with it a 1 MiB buffer, on every call. In ``flocklog serve``, whose mmap
    threshold is fixed at 256 KiB (``return_frames_to_the_system`` in :mod:`flocklog.hub.server`), each of those
    buffers was a fresh mapping: an ``mmap``, a page fault and an ``munmap`` (with its TLB flush) for every ack and
    both journal entries of every batch, ~10 % of the hub's CPU under uvicorn's load (perf). Not thread-safe: a
    packer is used by the thread that owns it only.
    """
    return msgpack.Packer(use_bin_type=True).pack  # type: ignore[no-any-return]  # msgpack is untyped


def unpack(data: bytes) -> Any:
    """Decode a msgpack body into plain data; any decoding problem becomes a :class:`FrameError`."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True, timestamp=0)
    except Exception as exc:  # msgpack raises a zoo of types (ExtraData, FormatError, ValueError...)
        raise FrameError(f"undecodable frame body: {type(exc).__name__}: {exc}") from None


def mac(secret: bytes, nonce: bytes, direction: bytes, counter: int, body: bytes) -> bytes:
    msg = nonce + direction + counter.to_bytes(8, "big") + body
    return hmac.new(secret, msg, hashlib.sha256).digest()


def seal(body: bytes, *, secret: bytes | None, nonce: bytes, direction: bytes, counter: int) -> bytes:
    """Turn a body into a wire frame (header + optional tag + body)."""
    payload = body if secret is None else mac(secret, nonce, direction, counter, body) + body
    return HEADER.pack(len(payload)) + payload


def open_payload(payload: bytes, *, secret: bytes | None, nonce: bytes, direction: bytes, counter: int) -> Any:
    """Check a payload's tag (constant-time) and decode its body into a dict with a string ``t`` (type)."""
    body = payload
    if secret is not None:
        if len(payload) < MAC_SIZE:
            raise FrameError("frame too short to carry its authentication tag")
        tag, body = payload[:MAC_SIZE], payload[MAC_SIZE:]
        if not hmac.compare_digest(tag, mac(secret, nonce, direction, counter, body)):
            raise FrameError("frame failed authentication: wrong secret, forged or replayed frame")
    obj = unpack(body)
    if not isinstance(obj, dict) or not isinstance(obj.get("t"), str):
        raise FrameError("frame body is not a map with a string 't' (type) field")
    return obj


def _safe_extra(value: Any, depth: int = 0) -> Any:
    """JSON-safe copy of an extra: scalars pass, containers recurse (bounded), anything else becomes repr()."""
    if isinstance(value, int) and not isinstance(value, bool) and not _INT_MIN <= value <= _INT_MAX:
        return str(value)  # msgpack integers are 64-bit
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, _SCALARS):
        return value
    if depth < _MAX_EXTRA_DEPTH:
        if isinstance(value, (list, tuple)):
            return [_safe_extra(v, depth + 1) for v in value]
        if isinstance(value, dict):
            return {str(k): _safe_extra(v, depth + 1) for k, v in value.items()}
    try:
        return repr(value)
    except Exception:  # a broken __repr__ must not take the record with it
        return f"<unrepresentable {type(value).__name__}>"


def _clean_text(text: str) -> str:
    """Lone surrogates (from undecodable file names, os.fsdecode...) cannot be UTF-8 encoded: escape them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def record_to_fields(record: logging.LogRecord, message: str) -> dict[str, Any]:
    """The fields of a record the hub needs, with ``msg`` already formatted by the client's formatter.

    Fields are coerced to the types the hub accepts, so a record built by hand (``makeLogRecord({})`` has
    ``levelno=None``) is still delivered instead of poisoning its batch.
    """
    fields: dict[str, Any] = {
        "name": record.name,
        "levelno": record.levelno,
        "levelname": record.levelname,
        "msg": message,
        "created": record.created,
        "process": record.process,
        "processName": record.processName,
        "thread": record.thread,
        "threadName": record.threadName,
        "module": record.module,
        "lineno": record.lineno,
        "funcName": record.funcName,
        "exc_text": record.exc_text,
        "stack_info": record.stack_info,
    }
    if _well_typed(fields):
        pass  # the common case: one check instead of fourteen
    else:
        _coerce(fields)
    extra_keys = record.__dict__.keys() - STANDARD_ATTRS
    fields["extra"] = None
    if extra_keys:
        extra = {k: _safe_extra(record.__dict__[k]) for k in extra_keys if k[:1] != "_"}
        if extra:
            fields["extra"] = extra
    return fields


def _well_typed(f: dict[str, Any]) -> bool:
    return (
        type(f["name"]) is str
        and type(f["levelname"]) is str
        and type(f["msg"]) is str
        and type(f["processName"]) is str
        and type(f["threadName"]) is str
        and type(f["module"]) is str
        and type(f["funcName"]) is str
        and type(f["levelno"]) is int
        and type(f["lineno"]) is int
        and type(f["created"]) is float
        and (f["process"] is None or type(f["process"]) is int)
        and (f["thread"] is None or type(f["thread"]) is int)
        and (f["exc_text"] is None or type(f["exc_text"]) is str)
        and (f["stack_info"] is None or type(f["stack_info"]) is str)
    )


def _coerce(fields: dict[str, Any]) -> None:
    for key in _STR_FIELDS:
        if type(fields[key]) is not str:
            fields[key] = "" if fields[key] is None else str(fields[key])
    for key in _INT_FIELDS:
        if type(fields[key]) is not int:
            fields[key] = _coerce_int(fields[key], 0)
    for key in _OPT_INT_FIELDS:
        if fields[key] is not None and type(fields[key]) is not int:
            fields[key] = _coerce_int(fields[key], None)
    for key in _OPT_STR_FIELDS:
        if fields[key] is not None and type(fields[key]) is not str:
            fields[key] = str(fields[key])
    if type(fields["created"]) is not float:
        fields["created"] = float(fields["created"]) if isinstance(fields["created"], (int, float)) else 0.0


def _coerce_int(value: Any, default: int | None) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return default
    return number if _INT_MIN <= number <= _INT_MAX else default


def _sanitized(fields: dict[str, Any]) -> dict[str, Any]:
    """Escape lone surrogates everywhere; only called when a plain pack failed (rare)."""
    out: dict[str, Any] = {k: _clean_text(v) if isinstance(v, str) else v for k, v in fields.items()}
    for key in _INT_FIELDS + _OPT_INT_FIELDS:
        out[key] = _coerce_int(out[key], 0 if key in _INT_FIELDS else None) if out[key] is not None else None
    extra = fields.get("extra")
    if isinstance(extra, dict):
        out["extra"] = {_clean_text(str(k)): _safe_extra(v) for k, v in extra.items()}
    return out


def _pack_fields(fields: dict[str, Any]) -> bytes:
    try:
        return pack([fields[k] for k in ORDER])
    except (UnicodeEncodeError, OverflowError, TypeError, ValueError):
        clean = _sanitized(fields)
        return pack([clean[k] for k in ORDER])


def encode_record(fields: dict[str, Any], limit: int) -> tuple[bytes, bool]:
    """Encode a record to at most ``limit`` bytes, truncating its message (with a marker) if needed.

    Returns the bytes and whether it was truncated. Extras go first, then message text, then exc/stack text.
    """
    data = _pack_fields(fields)
    if len(data) <= limit:
        return data, False
    fields = _sanitized(fields)
    fields["extra"] = None
    for key in ("stack_info", "exc_text"):
        data = _pack_fields(fields)
        if len(data) <= limit:
            return data, True
        fields[key] = None
    data = _pack_fields(fields)
    excess = len(data) - limit
    if excess > 0:
        raw = str(fields["msg"]).encode("utf-8")
        marker_room = len(TRUNCATION_MARKER) + 20
        keep = max(0, len(raw) - excess - marker_room)
        cut = raw[:keep].decode("utf-8", errors="ignore")
        fields["msg"] = cut + TRUNCATION_MARKER.format(n=len(raw) - len(cut.encode("utf-8")))
        data = _pack_fields(fields)
    if len(data) > limit:  # only if the fixed fields alone are larger than the limit (absurd names)
        fields["name"] = str(fields["name"])[:64]
        fields["funcName"] = fields["module"] = fields["threadName"] = fields["processName"] = ""
        data = _pack_fields(fields)
    return data, True


def encode_log_record(record: logging.LogRecord, message: str, limit: int) -> tuple[bytes, bool]:
    """The client's hot path: a well-typed record without extras is packed straight from its attributes.

    The fields are fetched by one C call (``attrgetter``) and their types checked as one list comparison
    against the usual signature (pid and thread ids set, no exception or stack text): about half the cost of
    fourteen ``type()`` tests in Python, measured. Anything unusual (extras, odd types, surrogates, oversize)
    takes the careful path through :func:`record_to_fields` and :func:`encode_record`, which produce the same
    wire format (pinned by a test).
    """
    if record.__dict__.keys() <= STANDARD_ATTRS:
        row = list(_record_row(record))
        row[3] = message
        row.append(None)
        if list(map(type, row)) == _COMMON_WIRE_TYPES or _plain_types(row):
            try:
                data = _PACKER_PACK(row) if type(message) is str else pack(row)
            except (UnicodeEncodeError, OverflowError, TypeError, ValueError):
                data = b""
            if data and len(data) <= limit:
                return data, False
    return encode_record(record_to_fields(record, message), limit)


#: The record's wire fields but ``extra``, in :data:`ORDER`; ``msg`` is fetched only to keep the positions.
_record_row = operator.attrgetter(*ORDER[:-1])


def _shared_packer_is_safe() -> bool:
    """Can one packer serve every thread without a lock? Only msgpack's C extension under a GIL.

    The row it packs holds exact ``str``/``int``/``float``/None values (checked just before), so the C packer runs
    no Python code and cannot give up the GIL half-way through. msgpack's pure-Python fallback
    (``MSGPACK_PUREPYTHON``, PyPy, platforms without a wheel) and a free-threaded build can switch threads inside
    ``pack``: one shared buffer then tears and mixes records.
    """
    gil_enabled = getattr(sys, "_is_gil_enabled", None)  # 3.13+; absent means a GIL build
    return msgpack.Packer.__module__ == "msgpack._cmsgpack" and (gil_enabled is None or bool(gil_enabled()))


#: The client's hot-path packer: one shared packer where that is safe (reusing its buffer halves the cost of a
#: ``packb``), else a ``packb`` per call.
_PACKER_PACK: Any = packer() if _shared_packer_is_safe() else pack
#: The types of :data:`ORDER` (but ``extra``) for nearly every record: pid and thread set, no exc/stack text.
_COMMON_TYPES = [str, int, str, str, float, int, str, int, str, str, int, str, type(None), type(None)]
#: The same with ``extra`` (nil): the signature of a plain record as the hub reads it.
_COMMON_WIRE_TYPES = [*_COMMON_TYPES, type(None)]


def _plain_types(row: list[Any]) -> bool:
    """The type check for a row that is not of the common signature (no pid, an exc text...)."""
    return (
        type(row[0]) is str
        and type(row[1]) is int
        and type(row[2]) is str
        and isinstance(row[3], str)
        and type(row[4]) is float
        and (row[5] is None or type(row[5]) is int)
        and type(row[6]) is str
        and (row[7] is None or type(row[7]) is int)
        and type(row[8]) is str
        and type(row[9]) is str
        and type(row[10]) is int
        and type(row[11]) is str
        and (row[12] is None or type(row[12]) is str)
        and (row[13] is None or type(row[13]) is str)
    )


def decode_record(data: Any) -> dict[str, Any]:
    """Type-check one encoded record and return its fields; raises FrameError (saying which field) if malformed."""
    if type(data) is not bytes:
        raise FrameError("record is not a byte string")
    obj = unpack(data)
    if type(obj) is not list or len(obj) != len(ORDER):
        raise FrameError(f"record is not an array of {len(ORDER)} fields")
    out = dict(zip(ORDER, obj, strict=True))
    if type(out["created"]) is int:
        out["created"] = float(out["created"])
    if not _well_typed(out):
        raise FrameError(f"record field {_first_bad_field(out)!r} has the wrong type")
    extra = out["extra"]
    if extra is not None:
        if type(extra) is not dict:
            raise FrameError("record field 'extra' must be a map or nil")
        # an extra may never shadow a LogRecord attribute or method, nor a dunder (``__class__``, ``__dict__``)
        out["extra"] = {
            k: v
            for k, v in extra.items()
            if type(k) is str
            and k.isidentifier()
            and k[:1] != "_"
            and k not in STANDARD_ATTRS
            and not hasattr(logging.LogRecord, k)
        }
    return out


def repair_record(fields: dict[str, Any], now: float) -> bool:
    """Replace a ``created`` no formatter can handle (NaN, ±inf, absurdly far) by ``now``; True if it did.

    Such a value is well typed (a float), so the decoder lets it through; unrepaired, ``int(created)`` in
    :func:`build_record` or ``time.localtime`` in a formatter raises for every handler, on every hub that reads it.
    """
    created = fields["created"]
    if math.isfinite(created) and _CREATED_MIN < created < _CREATED_MAX:
        return False
    fields["created"] = now
    return True


def _first_bad_field(out: dict[str, Any]) -> str:
    for key in ORDER:
        probe = dict(out)
        probe[key] = {"created": 0.0, "levelno": 0, "lineno": 0}.get(key, "" if key in _STR_FIELDS else None)
        if _well_typed(probe):
            return key
    return "?"


_TEMPLATE = {k: v for k, v in logging.makeLogRecord({}).__dict__.items() if k != "message"}


def build_record(fields: dict[str, Any]) -> logging.LogRecord:
    """A LogRecord from decoded fields; its ``msg`` is final text, so hub formatters default to ``%(message)s``.

    Built from a template instead of ``LogRecord.__init__`` (which would stamp the hub's own pid, thread and
    time only to be overwritten): this is the hub's per-record hot path. The client's formatter already put the
    traceback into ``msg``; ``exc_text``/``stack_info`` are kept as ``client_exc_text``/``client_stack_info`` so a
    hub formatter does not print them a second time.
    """
    record = logging.LogRecord.__new__(logging.LogRecord)
    attrs = record.__dict__
    attrs.update(_TEMPLATE)
    attrs.update(fields)
    del attrs["extra"]
    extra = fields["extra"]
    if extra:  # after the fields (decode_record let no extra shadow one), so an extra named "extra" survives
        attrs.update(extra)
    created = fields["created"]
    attrs["msecs"] = (created - int(created)) * 1000
    attrs["client_exc_text"] = fields["exc_text"]
    attrs["client_stack_info"] = fields["stack_info"]
    attrs["exc_text"] = attrs["stack_info"] = None
    return record


_new_record = logging.LogRecord.__new__


def _plain_wire(obj: list[Any]) -> bool:
    """A decoded record of another plain signature (no pid, an exc text...): 15 fields, no extras."""
    return len(obj) == 15 and obj[14] is None and type(obj[3]) is str and _plain_types(obj)


def read_plain(data: Any) -> logging.LogRecord | None:
    """The plain record's fast path of :func:`read_record`; None for anything else (the careful path's case).

    Raises FrameError for bytes msgpack cannot decode. The writer maps this over a whole chunk in C and only takes
    the careful path for a chunk where a record came back None.
    """
    if type(data) is bytes:
        obj = unpack(data)
        if type(obj) is list and (list(map(type, obj)) == _COMMON_WIRE_TYPES or _plain_wire(obj)):
            created = obj[4]
            if _CREATED_MIN < created < _CREATED_MAX:  # False for NaN and the infinities
                attrs = _TEMPLATE.copy()  # exc_text and stack_info stay None: the client's text is in msg
                (
                    attrs["name"],
                    attrs["levelno"],
                    attrs["levelname"],
                    attrs["msg"],
                    attrs["created"],
                    attrs["process"],
                    attrs["processName"],
                    attrs["thread"],
                    attrs["threadName"],
                    attrs["module"],
                    attrs["lineno"],
                    attrs["funcName"],
                    attrs["client_exc_text"],
                    attrs["client_stack_info"],
                    _,
                ) = obj
                attrs["msecs"] = (created - int(created)) * 1000
                record = _new_record(logging.LogRecord)
                record.__dict__ = attrs
                return record
    return None


def read_record(data: Any, now: float) -> tuple[logging.LogRecord, bool]:
    """:func:`decode_record`, :func:`repair_record` and :func:`build_record` in one step: (record, repaired).

    The hub writer's per-record hot path. A plain record (well typed, no extras, a usable ``created``: nearly
    all) is checked by position (its types compared as one list with the usual signature) and built from a copy of
    the template with its fields assigned by unpacking, about three times as fast as through a dict of fields
    checked by name (1.9 -> 1.45 µs a record, measured with the msgpack decode); anything else takes the careful
    path, which builds the same record (pinned by a test). Raises FrameError for a malformed record, as
    :func:`decode_record` does.
    """
    record = read_plain(data)
    if record is not None:
        return record, False
    fields = decode_record(data)
    repaired = repair_record(fields, now)
    return build_record(fields), repaired


def read_exact(sock: Any, n: int) -> bytes:
    """Read exactly ``n`` bytes from a blocking socket; EOF midway raises ConnectionError."""
    chunks: list[bytes] = []
    remaining = n
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            raise ConnectionError("connection closed mid-frame" if chunks or n != remaining else "connection closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_payload(sock: Any, max_frame: int) -> bytes:
    """Read one frame's payload; a frame larger than ``max_frame`` (or empty) raises FrameError unread."""
    (length,) = HEADER.unpack(read_exact(sock, HEADER.size))
    if length == 0 or length > max_frame:
        raise FrameError(f"frame length {length} outside 1..{max_frame}")
    return read_exact(sock, length)
