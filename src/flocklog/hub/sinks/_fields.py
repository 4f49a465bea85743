"""What every sink reads off a record the hub rebuilt: its extras, its exception text, its time in RFC 3339 UTC."""

from __future__ import annotations

import datetime
import logging
from typing import Any

from flocklog.hub.frames import STANDARD_ATTRS

# build_record keeps the client's traceback text under these names (``exc_text`` itself is cleared)
_HUB_ATTRS = frozenset({"client_exc_text", "client_stack_info"})
_SKIP = STANDARD_ATTRS | _HUB_ATTRS
_SCALARS = (str, int, float, bool)


def rfc3339(created: float) -> str:
    """UTC, microseconds, ``Z``: ``2026-12-02T18:26:22.123456Z`` (truncated, never rounded into the next second)."""
    micros = int(created * 1_000_000)
    stamp = datetime.datetime.fromtimestamp(micros // 1_000_000, tz=datetime.timezone.utc)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{micros % 1_000_000:06d}Z"


def exception_text(record: logging.LogRecord, formatter: logging.Formatter | None = None) -> str | None:
    """The traceback: the client's (hub records) or this process's own ``exc_info`` (a record logged in the hub)."""
    text = getattr(record, "client_exc_text", None) or record.exc_text
    if not text and record.exc_info:
        text = (formatter or logging.Formatter()).formatException(record.exc_info)
    return text or None


def stack_text(record: logging.LogRecord) -> str | None:
    return getattr(record, "client_stack_info", None) or record.stack_info or None


def json_safe(value: Any) -> Any:
    """Scalars stay as they are, containers keep their shape, anything else becomes its ``repr``-free ``str``."""
    if value is None or isinstance(value, _SCALARS):
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return str(value)


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra={...}`` fields of a record, JSON-safe, in the order they were set."""
    return {k: json_safe(v) for k, v in record.__dict__.items() if k not in _SKIP and not k.startswith("_")}
