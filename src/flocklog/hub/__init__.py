"""The fork-safe log hub: one process writes what many processes log, over framed sockets (never pickle).

Names are resolved lazily so ``import flocklog.hub`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "start_hub": "flocklog.hub.server",
    "Hub": "flocklog.hub.server",
    "HubHandler": "flocklog.hub.client",
    "query_status": "flocklog.hub.status",
}

if TYPE_CHECKING:
    from flocklog.hub.client import HubHandler
    from flocklog.hub.server import Hub, start_hub
    from flocklog.hub.status import query_status


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flocklog.hub' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["Hub", "HubHandler", "query_status", "start_hub"]
