"""flocklog: many processes, one log, nothing lost.

Public names only. Heavy parts (Celery, psycopg, Django) are imported lazily, so ``import flocklog`` stays cheap
and works without the optional extras installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from flocklog.errors import (
    ConfigError,
    FlocklogError,
    FrameError,
    HubError,
    PipelineError,
    SerializationError,
    StoreError,
)

__version__ = "0.1.0"

# name -> module that defines it; resolved on first access (PEP 562) so optional extras stay optional.
_LAZY: dict[str, str] = {
    "RotatingFileHandler": "flocklog.files.handlers",
    "TimedRotatingFileHandler": "flocklog.files.handlers",
    "ConcurrentRotatingFileHandler": "flocklog.files.handlers",
    "ConcurrentTimedRotatingFileHandler": "flocklog.files.handlers",
    "HubHandler": "flocklog.hub.client",
    "ExecutionLogger": "flocklog.pipeline.logger",
    "ExecutionLogHandler": "flocklog.pipeline.handler",
    "configure": "flocklog._configure",
    "Formatter": "flocklog.formatting",
    "JSONFormatter": "flocklog.formatting",
    "make_formatter": "flocklog.formatting",
}

if TYPE_CHECKING:
    from flocklog._configure import configure
    from flocklog.files.handlers import (
        ConcurrentRotatingFileHandler,
        ConcurrentTimedRotatingFileHandler,
        RotatingFileHandler,
        TimedRotatingFileHandler,
    )
    from flocklog.formatting import Formatter, JSONFormatter, make_formatter
    from flocklog.hub.client import HubHandler
    from flocklog.pipeline.handler import ExecutionLogHandler
    from flocklog.pipeline.logger import ExecutionLogger


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flocklog' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "ConcurrentRotatingFileHandler",
    "ConcurrentTimedRotatingFileHandler",
    "ConfigError",
    "ExecutionLogHandler",
    "ExecutionLogger",
    "FlocklogError",
    "Formatter",
    "FrameError",
    "HubError",
    "HubHandler",
    "JSONFormatter",
    "PipelineError",
    "RotatingFileHandler",
    "SerializationError",
    "StoreError",
    "TimedRotatingFileHandler",
    "__version__",
    "configure",
    "make_formatter",
]
