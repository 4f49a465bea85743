"""The rotation lock: one ``flock``-ed file per log set that also carries the set's shared rotation state.

Writes need no lock (one ``os.write`` on an ``O_APPEND`` descriptor is atomic); only rotation, compression and
retention are serialised here. The lock descriptor is per process: ``flock`` locks belong to the open file
description, which a forked child would otherwise share with its parent.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress


class RotationLock:
    """An exclusive, blocking, inter-process lock on ``path`` that can also store a short state string."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._pid = -1

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            # After fork the inherited descriptor shares the parent's lock state: open our own.
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self._pid = os.getpid()
        return self._fd

    @contextmanager
    def held(self) -> Iterator[RotationLock]:
        fd = self._descriptor()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield self
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def read_state(self) -> str:
        """The state text last written under the lock (call while holding it)."""
        return os.pread(self._descriptor(), 4096, 0).decode("ascii", errors="replace").strip()

    def write_state(self, text: str) -> None:
        fd = self._descriptor()
        data = (text + "\n").encode("ascii")
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))

    def forget(self) -> None:
        """Drop the descriptor (after fork in the child, or on close) without touching other processes' locks."""
        if self._fd is not None and self._pid == os.getpid():
            with suppress(OSError):
                os.close(self._fd)
        self._fd = None
        self._pid = -1
