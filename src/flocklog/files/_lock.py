"""The rotation lock: one ``flock``-ed file per log set that also carries the set's shared rotation state.

Writes need no lock (one ``os.write`` on an ``O_APPEND`` descriptor is atomic); only rotation, compression and
retention are serialised here. The lock descriptor is per process: ``flock`` locks belong to the open file
description, which a forked child would otherwise share with its parent.

Layout: bytes 0-7 hold a *generation* counter, bumped under the lock whenever a file of the set is renamed or
deleted; every process maps those bytes, so "did anything rotate since my last record?" is a memory read, not a
``stat``. The state text (the timed handler's slot) follows at :data:`HEADER`.
"""

from __future__ import annotations

import fcntl
import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress

HEADER = 16  # bytes before the state text; the generation counter lives in the first 8


class RotationLock:
    """An exclusive, blocking, inter-process lock on ``path`` that can also store a short state string."""

    def __init__(self, path: str, shared_map: mmap.mmap | None = None) -> None:
        self.path = path
        self._fd: int | None = None
        self._pid = -1
        self._map = shared_map

    def sibling(self) -> RotationLock:
        """The same lock through a descriptor of its own, for another thread of this process.

        ``flock`` excludes open file descriptions, not threads: two threads locking through one descriptor would
        both "hold" it at once. The background worker therefore locks through a sibling.
        """
        return RotationLock(self.path, self.generation_map())

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

    def generation_map(self) -> mmap.mmap:
        """The shared mapping of the generation counter (created once; it stays valid in forked children)."""
        if self._map is None:
            with self.held():
                fd = self._descriptor()
                if os.fstat(fd).st_size < HEADER:  # under the lock: nobody can have written state past it
                    os.ftruncate(fd, HEADER)
                self._map = mmap.mmap(fd, 8, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        return self._map

    def bump(self) -> None:
        """Tell every process that a file of the set was renamed or deleted (call while holding the lock)."""
        shared = self.generation_map()
        shared[0:8] = ((int.from_bytes(shared[0:8], "little") + 1) % (1 << 64)).to_bytes(8, "little")

    def read_state(self) -> str:
        """The state text last written under the lock (call while holding it)."""
        return os.pread(self._descriptor(), 4096, HEADER).decode("ascii", errors="replace").strip("\0 \n")

    def write_state(self, text: str) -> None:
        fd = self._descriptor()
        if os.fstat(fd).st_size < HEADER:
            os.ftruncate(fd, HEADER)
        data = (text + "\n").encode("ascii")
        os.pwrite(fd, data, HEADER)
        os.ftruncate(fd, HEADER + len(data))  # never below HEADER: the mapped counter must stay in the file

    def forget(self) -> None:
        """Drop the descriptor (after fork in the child, or on close) without touching other processes' locks."""
        if self._fd is not None and self._pid == os.getpid():
            with suppress(OSError):
                os.close(self._fd)
        self._fd = None
        self._pid = -1
