"""A HubHandler's spool: batches kept on local disk while the hub is away, replayed in order with a durable offset.

A spool file is ``FLSPOOL1`` + an 8-byte replay offset + frames (``uint32 length`` + batch body). The offset is
rewritten (``pwrite``, page cache: it survives a SIGKILL) after each batch the hub acked, so whoever resumes a
partly replayed file (this process later, or the process that adopts it after we died) continues where the last
replay stopped instead of sending everything again. A failed append (ENOSPC) is cut back to the last whole frame,
so a spool never holds a partial frame. Files are ``0600`` in a directory that must be ours and not writable by
others; otherwise a private directory is used instead (another local user could plant, read or delete records).

| field                       | owner thread                           | lock              |
|-----------------------------|----------------------------------------|-------------------|
| ``_fd``, ``_size``          | sender; emit()/close() once it stopped | ``_lock``         |
| ``pending``, replay fields  | the sender thread                      | none              |
| ``directory``               | set once (first use)                   | ``_lock``         |
"""

from __future__ import annotations

import contextlib
import os
import stat
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from flocklog._proc import pid_alive
from flocklog.errors import FrameError
from flocklog.hub import frames

ENV_SPOOL_DIR = "FLOCKLOG_HUB_SPOOL_DIR"
MAGIC = b"FLSPOOL1"
_OFFSET = struct.Struct(">Q")
HEADER_SIZE = len(MAGIC) + _OFFSET.size
_FSYNC_INTERVAL = 1.0
_fallback_lock = threading.Lock()
_fallback_dir: Path | None = None


def user_tag() -> str:
    """Who we are, for directory names: the uid on POSIX, the user name where there is no ``os.getuid``."""
    getuid = getattr(os, "getuid", None)
    if getuid is not None:
        return str(getuid())
    name = os.environ.get("USERNAME") or os.environ.get("USER") or "user"
    return "".join(c for c in name if c.isalnum() or c in "-_") or "user"


def default_spool_dir() -> str:
    return os.environ.get(ENV_SPOOL_DIR) or os.path.join(tempfile.gettempdir(), f"flocklog-spool-{user_tag()}")


def unsafe_reason(path: Path) -> str | None:
    """Why ``path`` may not hold our spool (None if it may): not a plain directory, not ours, writable by others."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"cannot inspect it: {exc}"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory (a symlink or a file)"
    if os.name == "nt":  # no uid, and st_mode says 0o777 for every directory there
        return None
    if st.st_uid != os.getuid():
        return f"it belongs to uid {st.st_uid}, not to us (uid {os.getuid()})"
    if st.st_mode & 0o022:
        return f"other users can write to it (mode {stat.S_IMODE(st.st_mode):#o})"
    return None


def _private_fallback() -> Path:
    global _fallback_dir
    with _fallback_lock:
        if _fallback_dir is None or not _fallback_dir.is_dir():
            _fallback_dir = Path(tempfile.mkdtemp(prefix=f"flocklog-spool-{user_tag()}-"))
        return _fallback_dir


def _pread(fd: int, n: int, pos: int) -> bytes:
    pread = getattr(os, "pread", None)
    if pread is not None:
        return pread(fd, n, pos)  # type: ignore[no-any-return]  # getattr of a typed function
    os.lseek(fd, pos, os.SEEK_SET)  # Windows: no pread; this descriptor is the replay's own
    return os.read(fd, n)


def _pwrite(fd: int, data: bytes, pos: int) -> None:
    pwrite = getattr(os, "pwrite", None)
    if pwrite is not None:
        pwrite(fd, data, pos)
        return
    os.lseek(fd, pos, os.SEEK_SET)
    os.write(fd, data)


def seq_and_count(body: bytes) -> tuple[int | None, int]:
    """A spooled batch's sequence number and record count (None, 0 if it cannot be decoded: the hub rejects it)."""
    try:
        batch = frames.unpack(body)
        return batch["seq"], len(batch["recs"])
    except (FrameError, KeyError, TypeError):
        return None, 0


class Spool:
    """The spool files of one HubHandler (one pid and client id): appending, adopting orphans, replaying."""

    def __init__(self, directory: Path, pid: int, cid: str, warn: Callable[[str, str], None]) -> None:
        self.wanted = directory
        self.directory: Path | None = None
        self.pid = pid
        self.cid = cid
        self._warn = warn
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0
        self._last_fsync = 0.0
        self.pending: list[Path] = []  # replay order: adopted orphans first, then our own files
        self._replay_fd: int | None = None
        self._replay_path: Path | None = None
        self._replay_pos = 0
        self._has_offset = False
        self._serial = 0
        self.path: Path | None = None

    # -- where -----------------------------------------------------------------------------------------------
    def _dir(self) -> Path:
        """The spool directory, checked once; an unsafe one is refused (said once) for a private fallback."""
        if self.directory is not None:
            return self.directory
        wanted = self.wanted
        with contextlib.suppress(OSError):
            wanted.mkdir(mode=0o700, parents=True, exist_ok=True)
        reason = unsafe_reason(wanted)
        if reason is None:
            self.directory = wanted
        else:
            self.directory = _private_fallback()
            self._warn(
                "spool_dir",
                f"flocklog HubHandler: refusing spool directory {wanted}: {reason}; spooling to the private "
                f"directory {self.directory} instead (fix the directory, or set {ENV_SPOOL_DIR})",
            )
        return self.directory

    def known_dir(self) -> Path:
        return self.directory or self.wanted

    # -- appending -------------------------------------------------------------------------------------------
    def append(self, bodies: list[bytes]) -> None:
        """Append whole frames, or nothing: on any error the file is cut back to its last whole frame (raises)."""
        data = b"".join(frames.HEADER.pack(len(b)) + b for b in bodies)
        with self._lock:
            if self._fd is None:
                self._open_new()
            fd = self._fd
            assert fd is not None
            try:
                view = memoryview(data)
                done = 0
                while done < len(data):
                    done += os.write(fd, view[done:])
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, self._size)
                raise
            self._size += len(data)
            now = time.monotonic()
            if now - self._last_fsync >= _FSYNC_INTERVAL:
                with contextlib.suppress(OSError):
                    os.fsync(fd)
                self._last_fsync = now
            assert self.path is not None
            if self.path not in self.pending:
                self.pending.append(self.path)

    def _open_new(self) -> None:
        directory = self._dir()
        self._serial += 1
        path = directory / f"{self.pid}-{self.cid}-{self._serial}.spool"
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(path, flags, 0o600)
        try:
            header = MAGIC + _OFFSET.pack(HEADER_SIZE)
            if os.write(fd, header) != len(header):
                raise OSError("short write of the spool header")
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        self._fd, self._size, self.path = fd, HEADER_SIZE, path

    def close_appender(self) -> None:
        with self._lock:
            self._close_appender_locked()

    def _close_appender_locked(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        self.close_appender()
        if self._replay_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._replay_fd)
            self._replay_fd = None
            self._replay_path = None

    def forget(self) -> None:
        """In a forked child: the parent's descriptors are not ours to close (their offsets are shared)."""
        for fd in (self._fd, self._replay_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._replay_fd = None

    # -- adopting --------------------------------------------------------------------------------------------
    def orphans(self) -> list[Path]:
        """Spool files of dead processes in a safe directory, oldest first (nothing from an unsafe one)."""
        directory = self.wanted
        if not directory.is_dir():
            return []
        reason = unsafe_reason(directory)
        if reason is not None:
            self._warn(
                "spool_dir",
                f"flocklog HubHandler: refusing spool directory {directory}: {reason}; its spool files are not "
                f"replayed, and this process spools to a private directory (fix the directory, or set {ENV_SPOOL_DIR})",
            )
            return []
        try:
            candidates = sorted(directory.glob("*.spool"), key=lambda p: p.stat().st_mtime)
        except OSError:
            return []
        found = []
        for path in candidates:
            owner = path.name.split("-", 1)[0]
            if owner.isdigit() and int(owner) != self.pid and not pid_alive(int(owner)):
                found.append(path)
        return found

    def adopt_orphans(self) -> int:
        """Claim spool files of dead processes (by renaming them to our pid) so they are replayed, oldest first."""
        adopted = 0
        for path in self.orphans():
            claimed = path.with_name(f"{self.pid}-adopted-{path.name}")
            try:
                os.rename(path, claimed)
            except OSError:
                continue  # another process adopted it first
            self.pending.insert(adopted, claimed)
            adopted += 1
        return adopted

    # -- replaying -------------------------------------------------------------------------------------------
    def replay(self, send: Callable[[bytes, int | None, int], str]) -> tuple[bool, int]:
        """Replay pending files in order through ``send`` ("ok", "rejected", "failed"); stop at the first failure.

        Returns (everything pending was replayed, records acked). Progress is saved after every batch.
        """
        replayed = 0
        while self.pending:
            path = self.pending[0]
            if self._replay_path != path and not self._open_replay(path):
                self.pending.pop(0)
                continue
            fd = self._replay_fd
            assert fd is not None
            while True:
                header = _pread(fd, frames.HEADER.size, self._replay_pos)
                if len(header) < frames.HEADER.size:
                    break
                (length,) = frames.HEADER.unpack(header)
                body = _pread(fd, length, self._replay_pos + frames.HEADER.size)
                if len(body) < length:
                    break  # a torn tail (a crash mid-append): nothing after it can be trusted
                seq, nrecs = seq_and_count(body)
                outcome = send(body, seq, nrecs)
                if outcome == "failed":
                    return False, replayed
                if outcome == "ok":
                    replayed += nrecs
                self._replay_pos += frames.HEADER.size + length
                self._save_offset(fd)
            with self._lock:  # fully replayed; if it is ours and still open for appending, new spooling starts a
                if self._fd is not None and path == self.path:  # fresh file
                    if self._size > self._replay_pos:
                        continue  # appended while we replayed: go on reading
                    self._close_appender_locked()
            with contextlib.suppress(OSError):
                os.close(fd)
            self._replay_fd, self._replay_path = None, None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self.pending.pop(0)
        return True, replayed

    def _open_replay(self, path: Path) -> bool:
        if self._replay_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._replay_fd)
            self._replay_fd = None
        try:
            fd = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return False
        head = _pread(fd, HEADER_SIZE, 0)
        if head[: len(MAGIC)] == MAGIC and len(head) == HEADER_SIZE:
            self._replay_pos = max(HEADER_SIZE, _OFFSET.unpack(head[len(MAGIC) :])[0])
            self._has_offset = True
        else:  # a spool of an older version: frames from the start, no offset to keep
            self._replay_pos = 0
            self._has_offset = False
        self._replay_fd, self._replay_path = fd, path
        return True

    def _save_offset(self, fd: int) -> None:
        if self._has_offset:
            with contextlib.suppress(OSError):
                _pwrite(fd, _OFFSET.pack(self._replay_pos), len(MAGIC))
