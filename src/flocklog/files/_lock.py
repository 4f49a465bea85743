"""The rotation lock: one locked file per log set that also carries the set's shared rotation state.

Writes need no lock (one ``os.write`` on an ``O_APPEND`` descriptor is atomic); only rotation, compression and
retention are serialised here, unless a handler locks per record (Windows, NFS). The lock descriptor is per
process: ``flock`` locks belong to the open file description, which a forked child would otherwise share with its
parent. Nothing is created before the first use, so a ``delay=True`` handler leaves no trace until it writes.

Layout: bytes 0-7 hold a *generation* counter, bumped under the lock whenever a file of the set is renamed or
deleted; "did anything rotate since my last record?" is one ``pread`` of those bytes (no path lookup, unlike a
``stat``). It is deliberately not an ``mmap``: a mapping turns any external truncation of the lock file (a broad
logrotate ``copytruncate`` glob, a cleanup script) into SIGBUS in every writer, while a short ``pread`` is merely
read as "changed". The state text (the timed handler's slot) follows at :data:`HEADER`.

Threads: one ``RotationLock`` belongs to one handler and is used under that handler's ``logging`` lock; ``held()``
nests (a subclass's ``doRollover`` called from ``emit`` re-enters it) by counting, and only the outermost level
takes and releases the OS lock. The maintenance thread uses a :meth:`sibling` with its own descriptor.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]  # the msvcrt branch below takes over
    import msvcrt

HEADER = 16  # bytes before the state text; the generation counter lives in the first 8
_PRESENCE_BYTE = 1 << 40  # OFD record lock far past the state: "a handler of this set is open" (rotate_on_start)


@dataclass(frozen=True)
class Permissions:
    """What a created file of the set gets: permission bits (``None``: the process umask decides) and owner."""

    bits: int | None = None
    uid: int = -1
    gid: int = -1
    enforce: bool = False  # chmod/owner given: also applied to a file that exists (as clh does); umask: creation only

    def apply(self, fd: int) -> None:
        """Best effort, as concurrent-log-handler does: only the owner (or root) may chmod/chown."""
        if self.bits is not None and hasattr(os, "fchmod"):
            with suppress(OSError):
                os.fchmod(fd, self.bits)
        if (self.uid != -1 or self.gid != -1) and hasattr(os, "fchown"):
            with suppress(OSError):
                os.fchown(fd, self.uid, self.gid)

    def open(self, path: str, flags: int) -> int:
        """``os.open`` that gives a file it creates these permissions (files that exist are left as they are)."""
        if self.bits is None and self.uid == -1 and self.gid == -1:
            return os.open(path, flags | os.O_CREAT, 0o666)
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            fd = os.open(path, flags | os.O_CREAT, 0o666)
            if self.enforce:
                self.apply(fd)
            return fd
        self.apply(fd)
        return fd


def _pread(fd: int, size: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, size, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # Windows: the descriptor is this handler's own, used under its lock
    return os.read(fd, size)


def _pwrite(fd: int, data: bytes, offset: int) -> None:
    if hasattr(os, "pwrite"):
        os.pwrite(fd, data, offset)
        return
    os.lseek(fd, offset, os.SEEK_SET)
    os.write(fd, data)


def _lock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)
    else:  # pragma: no cover - Windows: a blocking lock on byte 0 (retried every second by msvcrt)
        os.lseek(fd, 0, os.SEEK_SET)
        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
                return
            except OSError:
                continue


def _unlock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    else:  # pragma: no cover - Windows
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


class RotationLock:
    """An exclusive, blocking, inter-process lock on ``path`` that can also store a short state string.

    ``legacy`` is the lock name of flocklog 0.1 (``<file>.lock``): while that file exists it is used instead, so
    processes of the old and the new version running side by side still share one lock (read for one release).
    """

    def __init__(self, path: str, legacy: str | None = None, permissions: Permissions | None = None) -> None:
        self.wanted = path
        self.legacy = legacy
        self.permissions = permissions or Permissions()
        self._path: str | None = None
        self._fd: int | None = None
        self._pid = -1
        self._depth = 0
        self.read_fd: int | None = None  # the generation counter's reader (None until first use, and after fork)
        self._presence_fd: int | None = None

    @property
    def path(self) -> str:
        """The file actually used: decided at the first use (so ``delay=True`` creates nothing before)."""
        if self._path is None:
            self._path = self.legacy if self.legacy and os.path.lexists(self.legacy) else self.wanted
        return self._path

    def sibling(self) -> RotationLock:
        """The same lock through a descriptor of its own, for another thread of this process.

        ``flock`` excludes open file descriptions, not threads: two threads locking through one descriptor would
        both "hold" it at once. The background worker therefore locks through a sibling.
        """
        twin = RotationLock(self.wanted, self.legacy, self.permissions)
        twin._path = self._path
        return twin

    def _open(self) -> int:
        directory = os.path.dirname(self.path)
        if directory and not os.path.isdir(directory):
            os.makedirs(directory, exist_ok=True)  # lock_file_directory is created if missing, as clh does
        return self.permissions.open(self.path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            # After fork the inherited descriptor shares the parent's lock state: open our own.
            self._fd = self._open()
            self._pid = os.getpid()
            self._depth = 0
        return self._fd

    @contextmanager
    def held(self) -> Iterator[RotationLock]:
        fd = self._descriptor()
        if self._depth == 0:
            _lock(fd)
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1
            if self._depth == 0:
                _unlock(fd)

    @property
    def is_held(self) -> bool:
        return self._depth > 0 and self._pid == os.getpid()

    def generation(self) -> bytes:
        """The shared counter's 8 bytes (fewer if someone truncated the file: that compares as a change)."""
        if self.read_fd is None:
            self.read_fd = self._open()
        return _pread(self.read_fd, 8, 0)

    def bump(self) -> None:
        """Tell every process that a file of the set was renamed or deleted (call while holding the lock)."""
        fd = self._descriptor()
        current = _pread(fd, 8, 0).ljust(8, b"\0")
        _pwrite(fd, ((int.from_bytes(current, "little") + 1) % (1 << 64)).to_bytes(8, "little"), 0)

    def read_state(self) -> str:
        """The state text last written under the lock (call while holding it)."""
        return _pread(self._descriptor(), 4096, HEADER).decode("ascii", errors="replace").strip("\0 \n")

    def write_state(self, text: str) -> None:
        fd = self._descriptor()
        if os.fstat(fd).st_size < HEADER:
            os.ftruncate(fd, HEADER)
        data = (text + "\n").encode("ascii")
        _pwrite(fd, data, HEADER)
        os.ftruncate(fd, HEADER + len(data))  # never below HEADER: the counter must stay in the file

    def announce_first(self) -> bool:
        """Mark this handler present in the set; True if no other handler (in any process) has it open.

        Call while holding the lock. Uses an open-file-description record lock where the OS has them (Linux),
        so it is released with the handler's descriptor or by the kernel when a process dies; elsewhere a
        process-wide ``lockf`` lock, which any close of the lock file in this process also releases (then a
        later handler may consider itself first).
        """
        if fcntl is None or self._presence_fd is not None:
            return False
        fd = self._open()
        ofd = getattr(fcntl, "F_OFD_SETLK", None)
        first = True
        try:
            if ofd is not None:  # struct flock (type, whence, start, len, pid), Linux layout; pid 0 for OFD locks
                try:
                    fcntl.fcntl(fd, ofd, struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, _PRESENCE_BYTE, 1, 0))
                except OSError:
                    first = False
                fcntl.fcntl(fd, ofd, struct.pack("hhqqi4x", fcntl.F_RDLCK, os.SEEK_SET, _PRESENCE_BYTE, 1, 0))
            else:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _PRESENCE_BYTE)
                except OSError:
                    first = False
                fcntl.lockf(fd, fcntl.LOCK_SH, 1, _PRESENCE_BYTE)
        except OSError:
            with contextlib.suppress(OSError):
                os.close(fd)
            return False
        self._presence_fd = fd
        return first

    def forget(self) -> None:
        """Drop the descriptor (after fork in the child, or on close) without touching other processes' locks."""
        if self._fd is not None and self._pid == os.getpid():
            with suppress(OSError):
                os.close(self._fd)
        self._fd = None
        self._pid = -1
        self._depth = 0
        for name in ("read_fd", "_presence_fd"):  # a child's inherited copies are its own to close
            fd = getattr(self, name)
            if fd is not None:
                with suppress(OSError):
                    os.close(fd)
                setattr(self, name, None)


def baseLockFilename(baseFilename: str) -> tuple[str, str]:
    """(directory, name) of a set's lock file: ``logs/app.log`` -> ``('logs', '.app.log.lock')``.

    Hidden, and not matched by ``app.log*`` (logrotate, log shippers, cleanup scripts) nor by ``*`` in a shell;
    it keeps the whole file name, so ``app.log`` and ``app.txt`` never share a lock; and it is not
    concurrent-log-handler's ``.__app.lock``, so a clh process left running during a migration never shares it.
    """
    directory, name = os.path.split(os.path.abspath(baseFilename))
    return directory, f".{name}.lock"
