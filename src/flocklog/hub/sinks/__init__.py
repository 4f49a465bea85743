"""The hub's sinks: stdout JSON lines, syslog (RFC 5424) and OpenTelemetry (OTLP), each a ``logging.Handler``.

Each has its own bounded queue, sender thread, disk spool and ``stats()``; name them in the hub's config like any
handler (``"class": "flocklog.hub.sinks.OTLPHandler"``). Names resolve lazily: the OTLP one needs the ``otel``
extra, the others nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "SinkHandler": "flocklog.hub.sinks._base",
    "sink_stats": "flocklog.hub.sinks._base",
    "StdoutHandler": "flocklog.hub.sinks.stdout",
    "stdout_config": "flocklog.hub.sinks.stdout",
    "SyslogHandler": "flocklog.hub.sinks.syslog",
    "OTLPHandler": "flocklog.hub.sinks.otlp",
}

if TYPE_CHECKING:
    from flocklog.hub.sinks._base import SinkHandler, sink_stats
    from flocklog.hub.sinks.otlp import OTLPHandler
    from flocklog.hub.sinks.stdout import StdoutHandler, stdout_config
    from flocklog.hub.sinks.syslog import SyslogHandler


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flocklog.hub.sinks' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["OTLPHandler", "SinkHandler", "StdoutHandler", "SyslogHandler", "sink_stats", "stdout_config"]
