"""Process facts shared by the hub and the pipeline: whether the pid that owns a spool file still lives."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists (a process we may not signal still counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
