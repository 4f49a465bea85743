"""The hub's wire format: length-prefixed msgpack frames, optionally MAC'd, and the record codec (never pickle).

A frame on the wire is ``uint32 length`` + payload; with a shared secret the payload is a 32-byte HMAC-SHA256 tag
followed by the msgpack body. The tag covers the connection's nonce (sent by the hub in its hello), the direction
and a per-direction frame counter, so a frame can neither be forged nor replayed into another connection or
position. Decoding only ever builds plain data (str, int, float, bytes, list, dict) and type-checks every field.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import struct
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
# Attributes every LogRecord has; anything else on a record is an "extra" (logger.info(..., extra={...})).
STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_MAX_EXTRA_DEPTH = 4
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]  # msgpack is untyped


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
    """The fields of a record the hub needs, with ``msg`` already formatted by the client's formatter."""
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
    for key in ("msg", "name", "exc_text", "stack_info", "funcName", "module", "threadName", "processName"):
        if isinstance(fields[key], str):
            fields[key] = _clean_text(fields[key])
        elif fields[key] is not None or key in _STR_FIELDS:
            fields[key] = _clean_text(str(fields[key]))
    extra = {
        _clean_text(k): _safe_extra(v) for k, v in record.__dict__.items() if k not in STANDARD_ATTRS and k[:1] != "_"
    }
    if extra:
        fields["extra"] = extra
    return fields


def encode_record(fields: dict[str, Any], limit: int) -> tuple[bytes, bool]:
    """Encode a record to at most ``limit`` bytes, truncating its message (with a marker) if needed.

    Returns the bytes and whether it was truncated. Extras go first, then message text, then exc/stack text.
    """
    data = pack(fields)
    if len(data) <= limit:
        return data, False
    fields = dict(fields)
    fields.pop("extra", None)
    for key in ("stack_info", "exc_text"):
        data = pack(fields)
        if len(data) <= limit:
            return data, True
        fields[key] = None
    data = pack(fields)
    excess = len(data) - limit
    if excess > 0:
        raw = str(fields["msg"]).encode("utf-8")
        marker_room = len(TRUNCATION_MARKER) + 20
        keep = max(0, len(raw) - excess - marker_room)
        cut = raw[:keep].decode("utf-8", errors="ignore")
        fields["msg"] = cut + TRUNCATION_MARKER.format(n=len(raw) - len(cut.encode("utf-8")))
        data = pack(fields)
    if len(data) > limit:  # only if the fixed fields alone are larger than the limit (absurd names)
        fields["name"] = str(fields["name"])[:64]
        fields["funcName"] = fields["module"] = fields["threadName"] = fields["processName"] = ""
        data = pack(fields)
    return data, True


def decode_record(data: Any) -> dict[str, Any]:
    """Type-check one encoded record and return the ``makeLogRecord`` dict; raises FrameError if malformed."""
    if not isinstance(data, bytes):
        raise FrameError("record is not a byte string")
    obj = unpack(data)
    if not isinstance(obj, dict):
        raise FrameError("record is not a map")
    out: dict[str, Any] = {}
    for key in _STR_FIELDS:
        value = obj.get(key)
        if not isinstance(value, str):
            raise FrameError(f"record field {key!r} must be a string")
        out[key] = value
    for key in _INT_FIELDS:
        value = obj.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise FrameError(f"record field {key!r} must be an integer")
        out[key] = value
    for key in _OPT_INT_FIELDS:
        value = obj.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise FrameError(f"record field {key!r} must be an integer or nil")
        out[key] = value
    for key in _OPT_STR_FIELDS:
        value = obj.get(key)
        if value is not None and not isinstance(value, str):
            raise FrameError(f"record field {key!r} must be a string or nil")
        out[key] = value
    created = obj.get("created")
    if not isinstance(created, (int, float)) or isinstance(created, bool):
        raise FrameError("record field 'created' must be a number")
    out["created"] = float(created)
    extra = obj.get("extra", {})
    if not isinstance(extra, dict):
        raise FrameError("record field 'extra' must be a map")
    # an extra may never shadow a LogRecord attribute or method, nor a dunder (``__class__``, ``__dict__``)
    out["extra"] = {
        k: v
        for k, v in extra.items()
        if isinstance(k, str)
        and k.isidentifier()
        and k[:1] != "_"
        and k not in STANDARD_ATTRS
        and not hasattr(logging.LogRecord, k)
    }
    return out


def build_record(fields: dict[str, Any]) -> logging.LogRecord:
    """A LogRecord from decoded fields; its ``msg`` is final text, so hub formatters default to ``%(message)s``.

    The client's formatter already put the traceback into ``msg``; ``exc_text``/``stack_info`` are kept as
    ``client_exc_text``/``client_stack_info`` so a hub formatter does not print them a second time.
    """
    extra = fields.get("extra") or {}
    attrs = {k: v for k, v in fields.items() if k not in ("extra", "exc_text", "stack_info")}
    record = logging.makeLogRecord(attrs)
    record.args = None
    record.msecs = (record.created - int(record.created)) * 1000
    record.client_exc_text = fields.get("exc_text")
    record.client_stack_info = fields.get("stack_info")
    for key, value in extra.items():
        setattr(record, key, value)
    return record


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
