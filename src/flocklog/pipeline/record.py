"""The execution-log record: created in the caller with its own id and time, so redelivery never duplicates it."""

from __future__ import annotations

import json
import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from flocklog.errors import SerializationError

HOST = socket.gethostname()


def _check_json(message: str, fields: dict[str, Any]) -> None:
    try:
        json.dumps(fields, allow_nan=False)
    except (TypeError, ValueError) as exc:
        bad = [key for key, value in fields.items() if not _json_ok(value)]
        raise SerializationError(
            f"execution-log record {message!r}: field(s) {', '.join(bad) or '?'} cannot be stored as JSON ({exc}); "
            "pass str(value) or a dict/list of plain values"
        ) from None


def _json_ok(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
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
        return cls(level=int(level), message=str(message), logger=logger, fields=fields)

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
