"""Crash-safe gzip of one archive, off the hot path and off the lock.

An archive is compressed into ``<archive>.gz.tmp`` (created with ``O_EXCL``, so one process claims it, and
``flock``-ed while it is written), fsynced, then renamed into place under the rotation lock, and only then is the
plain archive removed. A temp file nobody holds a lock on is a crashed compressor's leftover: it is removed once
it is older than :data:`STALE_TMP` (the age only covers the instant between creating and locking).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass

from flocklog.files._lock import Permissions, RotationLock

try:
    import fcntl
except ImportError:  # Windows: a temp file's liveness is judged by its age alone
    fcntl = None  # type: ignore[assignment]  # checked before each use

STALE_TMP = 5.0  # an unlocked temp file older than this is a crashed compressor's leftover


def _exists(path: str) -> bool:
    return os.path.lexists(path)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@dataclass
class _Snapshot:
    ino: int
    size: int
    mtime_ns: int


def _snapshot(path: str) -> _Snapshot | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return _Snapshot(st.st_ino, st.st_size, st.st_mtime_ns)


def compress_archive(
    path: str, lock: RotationLock, permissions: Permissions, relocate: Callable[[str, _Snapshot], str | None]
) -> bool:
    """Gzip ``path`` off the lock; swap it in under the lock only if the archive did not change meanwhile.

    ``relocate`` says where the archive that was ``path`` (as ``snap``) lives now: size archives move on each
    rotation, so the compressed copy goes next to wherever the plain one went, or nowhere if it was written to.
    """
    snap = _snapshot(path)
    if snap is None:
        return False
    claim = path + ".gz.tmp"
    try:
        fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
    except FileExistsError:
        return False  # another process is compressing it (or crashed doing so: cleaned when stale)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held until we close: "this compressor is alive"
        with contextlib.suppress(OSError):  # the .gz keeps the archive's mode (logs shared between users)
            os.fchmod(fd, stat.S_IMODE(os.stat(path).st_mode))
        permissions.apply(fd)
        with (
            open(path, "rb") as source,
            os.fdopen(fd, "wb", closefd=False) as raw,
            gzip.GzipFile(fileobj=raw, mode="wb") as gz,
        ):
            shutil.copyfileobj(source, gz, 1 << 20)
            gz.flush()
            raw.flush()
            os.fsync(fd)
        with lock.held():
            current = relocate(path, snap)
            if current is None:
                _remove(claim)  # written to or deleted meanwhile: try again later from the new state
                return False
            os.replace(claim, current + ".gz")
            _remove(current)
            lock.bump()  # a writer may still hold the plain archive: make it look before its next record
        return True
    except BaseException:
        _remove(claim)
        raise
    finally:
        os.close(fd)


def clean_leftovers(directory: str, prefix: str, now: float) -> None:
    """Remove the ``<prefix>*.gz.tmp`` files that crashed compressors left behind (never a live one's)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(prefix) and name.endswith(".gz.tmp"):
            path = os.path.join(directory, name)
            snap = _snapshot(path)
            if snap is not None and now - snap.mtime_ns / 1e9 > STALE_TMP:
                _remove_if_abandoned(path)


def _remove_if_abandoned(path: str) -> None:
    """Remove a compressor's temp file unless a live compressor still holds its lock."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return  # being written right now
    try:
        _remove(path)
    finally:
        os.close(fd)
