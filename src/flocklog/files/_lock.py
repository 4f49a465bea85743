"""The rotation lock: one ``flock``-ed file per log set that also carries the set's shared rotation state.

Writes need no lock (one ``os.write`` on an ``O_APPEND`` descriptor is atomic); only rotation, compression and
retention are serialised here. The lock descriptor is per process: ``flock`` locks belong to the open file
description, which a forked child would otherwise share with its parent.

Layout: bytes 0-7 hold a *generation* counter, bumped under the lock whenever a file of the set is renamed or
deleted; "did anything rotate since my last record?" is one ``pread`` of those bytes (no path lookup, unlike a
``stat``). It is deliberately not an ``mmap``: a mapping turns any external truncation of the lock file (a broad
logrotate ``copytruncate`` glob, a cleanup script) into SIGBUS in every writer, while a short ``pread`` is merely
read as "changed". The state text (the timed handler's slot) follows at :data:`HEADER`.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress

HEADER = 16  # bytes before the state text; the generation counter lives in the first 8


class RotationLock:
    """An exclusive, blocking, inter-process lock on ``path`` that can also store a short state string."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._pid = -1
        self._read_fd: int | None = None  # for the generation counter; reading needs no per-process descriptor

    def sibling(self) -> RotationLock:
        """The same lock through a descriptor of its own, for another thread of this process.

        ``flock`` excludes open file descriptions, not threads: two threads locking through one descriptor would
        both "hold" it at once. The background worker therefore locks through a sibling.
        """
        return RotationLock(self.path)

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

    def generation(self) -> bytes:
        """The shared counter's 8 bytes (fewer if someone truncated the file: that compares as a change)."""
        if self._read_fd is None:
            self._read_fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        return os.pread(self._read_fd, 8, 0)

    def bump(self) -> None:
        """Tell every process that a file of the set was renamed or deleted (call while holding the lock)."""
        fd = self._descriptor()
        current = os.pread(fd, 8, 0).ljust(8, b"\0")
        os.pwrite(fd, ((int.from_bytes(current, "little") + 1) % (1 << 64)).to_bytes(8, "little"), 0)

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
        if self._read_fd is not None:  # a child's inherited copy is its own to close
            with suppress(OSError):
                os.close(self._read_fd)
            self._read_fd = None
