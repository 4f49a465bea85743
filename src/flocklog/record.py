"""The execution-log record: created in the caller with its own id and time, so redelivery never duplicates it."""

from __future__ import annotations

import json
import math
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from flocklog.errors import SerializationError

HOST = socket.gethostname()

_VERSION_MASK = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_VERSION_BITS = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant


def _uuid4_fast() -> uuid.UUID:
    """``uuid.uuid4()`` without ``UUID.__init__``'s argument parsing: half the cost, in the caller's log().

    The random bits and the version/variant bits are exactly uuid4's; only the constructor is skipped by setting
    UUID's two slots directly, as ``UUID.__init__`` itself does. Checked once at import; any surprise (a
    future UUID layout) falls back to ``uuid.uuid4``.
    """
    value = object.__new__(uuid.UUID)
    object.__setattr__(value, "int", (int.from_bytes(os.urandom(16), "big") & _VERSION_MASK) | _VERSION_BITS)
    object.__setattr__(value, "is_safe", uuid.SafeUUID.unknown)
    return value


def _pick_uuid4() -> Callable[[], uuid.UUID]:
    try:
        probe = _uuid4_fast()
        if probe.version == 4 and probe.variant == uuid.RFC_4122 and uuid.UUID(str(probe)) == probe:
            return _uuid4_fast
    except Exception:
        pass
    return uuid.uuid4


new_id = _pick_uuid4()


_PLAIN = frozenset({str, int, bool, type(None)})
_STRICT = json.JSONEncoder(allow_nan=False)  # json.dumps(..., allow_nan=False) would build an encoder per call


def _check_json(message: str, fields: dict[str, Any]) -> None:
    # This runs in the caller's log(): most fields are plain scalars, which need no trial encoding.
    for value in fields.values():
        if type(value) in _PLAIN or (type(value) is float and math.isfinite(value)):
            continue
        break
    else:
        return
    try:
        _STRICT.encode(fields)
    except (TypeError, ValueError) as exc:
        bad = [key for key, value in fields.items() if not _json_ok(value)]
        raise SerializationError(
            f"execution-log record {message!r}: field(s) {', '.join(bad) or '?'} cannot be stored as JSON ({exc}); "
            "pass str(value) or a dict/list of plain values"
        ) from None


def _json_ok(value: Any) -> bool:
    try:
        _STRICT.encode(value)
    except (TypeError, ValueError):
        return False
    return True


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
    def create(cls, level: int, message: str, logger: str = "", **fields: Any) -> ExecutionRecord:
        """Build and validate a record; a field JSON cannot hold raises :class:`SerializationError` here."""
        _check_json(message, fields)
        # Positional, with the factories inlined: keyword construction of a frozen dataclass costs 3x as much,
        # and this is on the caller's path.
        return cls(
            int(level),
            message if type(message) is str else str(message),
            logger,
            fields,
            new_id(),
            datetime.now(timezone.utc),
            HOST,
            os.getpid(),
        )

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
