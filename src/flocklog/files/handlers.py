"""Process-safe drop-ins for the stdlib's ``RotatingFileHandler`` and ``TimedRotatingFileHandler``.

Each record is one ``os.write`` on an ``O_APPEND`` descriptor, so any number of processes append without a lock
and without tearing lines. A per-set lock file serialises rotation only; before writing, a process notices that
the path no longer names the file it holds and reopens. Time slots come from the clock (see ``policies``), so
every process rotates at the same boundary and the first one to get the lock does it, once. Where appends are not
atomic (Windows, NFS) ``lock_per_record=True`` takes the lock around every record instead.

A subclass that overrides ``shouldRollover`` or ``doRollover`` gets the stdlib's protocol (ask, then rotate, then
write), run under the rotation lock so processes decide one at a time.
"""

from __future__ import annotations

from flocklog.files._lock import baseLockFilename
from flocklog.files._options import LogDirectoryNotFoundError
from flocklog.files._size import RotatingFileHandler
from flocklog.files._timed import TimedRotatingFileHandler

# concurrent-log-handler's class names: the same classes, which take every clh option (see ``_options``).
ConcurrentRotatingFileHandler = RotatingFileHandler
ConcurrentTimedRotatingFileHandler = TimedRotatingFileHandler

__all__ = [
    "ConcurrentRotatingFileHandler",
    "ConcurrentTimedRotatingFileHandler",
    "LogDirectoryNotFoundError",
    "RotatingFileHandler",
    "TimedRotatingFileHandler",
    "baseLockFilename",
]
