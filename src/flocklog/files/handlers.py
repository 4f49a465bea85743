"""Process-safe drop-ins for the stdlib's ``RotatingFileHandler`` and ``TimedRotatingFileHandler``.

Each record is one ``os.write`` on an ``O_APPEND`` descriptor, so any number of processes append without a lock
and without tearing lines. A per-set lock file serialises rotation only; before writing, a process notices that
the path no longer names the file it holds and reopens. Time slots come from the clock (see ``policies``), so
every process rotates at the same boundary and the first one to get the lock does it, once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import locale
import logging
import logging.handlers
import os
import stat
import time
from collections.abc import Sequence
from typing import Any

from flocklog import _lifecycle
from flocklog.errors import ConfigError
from flocklog.files._lock import RotationLock
from flocklog.files._maintenance import Maintenance, SizeArchives, TimedArchives
from flocklog.files.policies import TimePolicy

PATH_CHECK_INTERVAL = 1.0  # seconds between checks that the path still names the file a process holds
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


def _check_directory(path: str) -> None:
    """Fail at construction, with the reason, rather than on the first record in some worker much later."""
    directory = os.path.dirname(path) or "."
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        raise ConfigError(
            f"log directory {directory!r} does not exist: create it, or point the handler elsewhere"
        ) from None
    except PermissionError:
        raise ConfigError(
            f"log directory {directory!r} cannot be reached by this process (uid {os.getuid()}): "
            "a parent directory denies access"
        ) from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{directory!r} is not a directory, so {os.path.basename(path)!r} cannot live in it")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"log directory {directory!r} is not writable by this process (uid {os.getuid()})")
    if os.path.isdir(path):
        raise ConfigError(f"log file {path!r} is a directory")


class _SafeFileMixin:
    """The write path shared by both handlers: own descriptor, inode checks, counted drops, fork reset."""

    baseFilename: str
    encoding: str | None
    errors: str | None
    terminator: str
    mode: str
    delay: bool

    def _setup(self, *, delay: bool, lock_file: str | None, compress: bool, max_age: float | None) -> None:
        if max_age is not None and max_age <= 0:
            raise ConfigError(f"max_age must be a positive number of seconds, got {max_age!r}")
        _check_directory(self.baseFilename)
        self.delay = delay
        self.compress = compress
        self.max_age = max_age
        self.lock_file = os.path.abspath(lock_file) if lock_file else self.baseFilename + ".lock"
        self.dropped = 0  # records that could not be written (full disk, I/O error); each went to handleError
        self._lock_file = RotationLock(self.lock_file)
        try:
            # Bumped by whoever renames or deletes a file of the set: one pread per record, not a stat.
            self._gen_seen = self._lock_file.generation()
        except OSError as exc:
            raise ConfigError(f"cannot use lock file {self.lock_file!r}: {exc.strerror or exc}") from None
        self._fd: int | None = None
        self._ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the file our descriptor holds
        self._needs_newline = False
        self._end = 0  # file offset after our last write: the file's size then, all writers included
        self._next_check = 0.0  # monotonic time of the next "is the path still our file?" check
        self._truncate_first = self.mode.startswith("w")
        codec = self.encoding if self.encoding not in (None, "locale") else locale.getpreferredencoding(False)
        self._codec = codec or "utf-8"
        self._maintenance = Maintenance(self._lock_file, self._archives())
        _lifecycle.register(self, stage=_lifecycle.Stage.FILES, after_fork=_SafeFileMixin._after_fork, sigterm=False)
        if not delay:
            self._reopen()

    def _archives(self) -> SizeArchives | TimedArchives:
        raise NotImplementedError

    # -- descriptor management
    def _reopen(self) -> int:
        self._close_fd()
        self._gen_seen = self._lock_file.generation()  # read before opening: a later rotation is noticed next record
        flags = _FLAGS | (os.O_TRUNC if self._truncate_first else 0)
        self._truncate_first = False
        fd = os.open(self.baseFilename, flags, 0o644)
        st = os.fstat(fd)
        self._fd, self._ident, self._end = fd, (st.st_dev, st.st_ino), st.st_size
        self._next_check = time.monotonic() + PATH_CHECK_INTERVAL
        return fd

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd, self._ident = None, None

    def _path_moved(self) -> bool:
        """True when the path no longer names the file we hold (rotated by another process, or removed)."""
        try:
            st = os.stat(self.baseFilename)
        except FileNotFoundError:
            return True
        return (st.st_dev, st.st_ino) != self._ident

    def _should_look(self) -> bool:
        """Whether to ``stat`` the path before this record (a ``stat`` per record would cost ~25%).

        Yes when the shared generation counter changed (another process renamed or deleted a file of the set:
        our descriptor may name an archive that is about to go), and at least once per
        :data:`PATH_CHECK_INTERVAL` for what flocklog cannot see: an external ``logrotate`` or a deleted file.
        """
        generation = self._lock_file.generation()
        if generation != self._gen_seen:
            self._gen_seen = generation  # taken before the stat, so a rotation after it is seen next time
            self._next_check = time.monotonic() + PATH_CHECK_INTERVAL
            return True
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + PATH_CHECK_INTERVAL
        return True

    def _moved_lately(self) -> bool:
        return self._should_look() and self._path_moved()

    def _write_tracked(self, fd: int, data: bytes) -> None:
        self._write(fd, data)
        if fd == self._fd:
            self._end = os.lseek(fd, 0, os.SEEK_CUR)  # O_APPEND: where our record ended is the file's size

    def _after_fork(self) -> None:
        # The O_APPEND descriptor may be shared with the parent; the lock descriptor and the thread may not.
        self._lock_file.forget()
        self._maintenance.after_fork()

    # -- the write path
    def _encode(self, record: logging.LogRecord) -> bytes:
        text: str = self.format(record) + self.terminator  # type: ignore[attr-defined]  # logging.Handler.format
        return text.encode(self._codec, self.errors or "strict")

    def _write(self, fd: int, data: bytes) -> None:
        if self._needs_newline:
            # A record was cut short (disk full): end that line so the next record is not glued to it.
            os.write(fd, b"\n")
            self._needs_newline = False
        view = memoryview(data)
        done = 0
        while done < len(data):
            try:
                done += os.write(fd, view[done:])
            except OSError:
                if done:
                    self._needs_newline = True
                raise

    def emit(self, record: logging.LogRecord) -> None:
        """Write one record with one ``os.write``; failures go to ``handleError`` and are counted, never raised."""
        try:
            data = self._encode(record)
            self._emit_bytes(record, data)
        except Exception:
            self.dropped += 1
            self._next_check = 0.0  # after a failure (full disk, removed file) look at the path again at once
            self.handleError(record)  # type: ignore[attr-defined]  # logging.Handler.handleError

    def _emit_bytes(self, record: logging.LogRecord, data: bytes) -> None:
        raise NotImplementedError

    def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        """Write records that arrive together (the hub's writer has hundreds) with one ``os.write`` when they fit.

        One system call per chunk instead of one per record, and a process killed meanwhile leaves the chunk
        written or not, not half. Records that would straddle a rotation (size or time slot) are written one by
        one, as is everything when a subclass overrides ``emit``. Levels and filters are the caller's, as for emit.
        """
        if not records:
            return
        self.acquire()  # type: ignore[attr-defined]  # logging.Handler.acquire
        try:
            if type(self).emit is not _SafeFileMixin.emit:
                for record in records:
                    self.emit(record)
                return
            try:
                chunks = [self._encode(record) for record in records]
            except Exception:  # one record cannot be formatted: each is then counted (or written) on its own
                for record in records:
                    self.emit(record)
                return
            data = b"".join(chunks)
            if not self._fits_one_write(records, len(data)):
                for record, chunk in zip(records, chunks, strict=True):
                    self._emit_encoded(record, chunk)
                return
            self._emit_encoded(records[-1], data, count=len(records))
        finally:
            self.release()  # type: ignore[attr-defined]  # logging.Handler.release

    def _fits_one_write(self, records: Sequence[logging.LogRecord], size: int) -> bool:
        raise NotImplementedError

    def _emit_encoded(self, record: logging.LogRecord, data: bytes, count: int = 1) -> None:
        try:
            self._emit_bytes(record, data)
        except Exception:
            self.dropped += count
            self._next_check = 0.0
            self.handleError(record)  # type: ignore[attr-defined]  # logging.Handler.handleError

    def close(self) -> None:
        self.acquire()  # type: ignore[attr-defined]  # logging.Handler.acquire
        try:
            self._close_fd()
            self._maintenance.stop()
            self._lock_file.forget()
            _lifecycle.unregister(self)
        finally:
            self.release()  # type: ignore[attr-defined]  # logging.Handler.release
        logging.Handler.close(self)  # type: ignore[arg-type]  # the mixin is always combined with a Handler

    def reopen(self) -> None:
        """Close and reopen the file (after an external logrotate, or on SIGHUP)."""
        self.acquire()  # type: ignore[attr-defined]
        try:
            self._reopen()
        finally:
            self.release()  # type: ignore[attr-defined]

    def flush(self) -> None:
        """Nothing is buffered: every record is in the kernel when ``emit`` returns."""

    def wait_for_maintenance(self, timeout: float = 10.0) -> bool:
        """Block until pending compression/retention is done (for tests and orderly shutdowns)."""
        return self._maintenance.drain(timeout)


class RotatingFileHandler(_SafeFileMixin, logging.handlers.RotatingFileHandler):
    """Size-based rotation that any number of processes can share; archives ``app.log.1`` .. ``app.log.N``.

    Same arguments and archive names as :class:`logging.handlers.RotatingFileHandler`; ``namer``/``rotator`` are
    honoured. Extras (keyword-only): ``compress`` gzips archives in the background (``app.log.1.gz``),
    ``max_age`` deletes archives older than that many seconds, ``lock_file`` moves the rotation lock.
    """

    def __init__(
        self,
        filename: str | os.PathLike[str],
        mode: str = "a",
        maxBytes: int = 0,
        backupCount: int = 0,
        encoding: str | None = None,
        delay: bool = False,
        errors: str | None = None,
        *,
        compress: bool = False,
        max_age: float | None = None,
        lock_file: str | None = None,
        **legacy: Any,
    ) -> None:
        compress, lock_file = _legacy_options(filename, legacy, compress, lock_file)
        if not isinstance(maxBytes, int) or maxBytes < 0:
            raise ConfigError(f"maxBytes must be an int >= 0 (0 = never rotate by size), got {maxBytes!r}")
        if not isinstance(backupCount, int) or backupCount < 0:
            raise ConfigError(f"backupCount must be an int >= 0, got {backupCount!r}")
        # The stdlib opens a stream here unless delay; we never want its stream (one write per record is ours).
        logging.handlers.RotatingFileHandler.__init__(
            self, filename, mode, maxBytes, backupCount, encoding, True, errors
        )
        self._setup(delay=delay, lock_file=lock_file, compress=compress, max_age=max_age)

    def _archives(self) -> SizeArchives:
        return SizeArchives(self.baseFilename, self.backupCount, self.compress, self.max_age, self.rotation_filename)

    @property
    def _sizes(self) -> SizeArchives:
        archives = self._maintenance.archives
        assert isinstance(archives, SizeArchives)
        return archives

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        """Would this record push the live file past ``maxBytes``? (as the stdlib asks it, for callers that do)."""
        if self.maxBytes <= 0 or self.backupCount <= 0:
            return False
        try:
            size = os.stat(self.baseFilename).st_size
        except FileNotFoundError:
            return False
        return size > 0 and size + len(self._encode(record)) > self.maxBytes

    def doRollover(self) -> None:
        """Rotate now, exactly once across processes (a no-op if another process just did)."""
        with self._lock_file.held():
            if self._fd is None or self._path_moved():
                self._reopen()
            self._rotate_locked(force=True, incoming=0)

    def _rotate_locked(self, *, force: bool, incoming: int) -> None:
        assert self._fd is not None
        size = self._end = os.fstat(self._fd).st_size
        if size == 0 or not (force or size + incoming > self.maxBytes):
            return
        if self.backupCount > 0:
            self._sizes.shift(self.rotate)
            self._lock_file.bump()
        self._reopen()
        self._maintenance.kick()

    def _fits_one_write(self, records: Sequence[logging.LogRecord], size: int) -> bool:
        return self.maxBytes <= 0 or self.backupCount <= 0 or size <= self.maxBytes

    def _emit_bytes(self, record: logging.LogRecord, data: bytes) -> None:
        fd = self._fd
        if fd is None or self._moved_lately():
            fd = self._reopen()
        if self.maxBytes > 0 and self.backupCount > 0 and self._end + len(data) > self.maxBytes:
            # Our file is full, or another process rotated it away from us (it was full): decide under the lock.
            with self._lock_file.held():
                if self._path_moved():
                    self._reopen()  # someone rotated while we waited: check the new file, do not rotate twice
                self._rotate_locked(force=False, incoming=len(data))
            fd = self._fd
            assert fd is not None
        self._write_tracked(fd, data)


class TimedRotatingFileHandler(_SafeFileMixin, logging.handlers.TimedRotatingFileHandler):
    """Time-based (optionally also size-based) rotation at clock boundaries shared by every process.

    Same arguments, ``when`` values, suffixes and ``extMatch`` as :class:`logging.handlers.TimedRotatingFileHandler`.
    A record goes to the file of the slot its ``record.created`` falls in; the slot of the live file is kept in
    the lock file, so processes started at different times agree and each boundary is rotated exactly once. An
    archive name that exists is never reused: a second archive for one slot gets ``.1``, ``.2`` ... appended.
    """

    def __init__(
        self,
        filename: str | os.PathLike[str],
        when: str = "h",
        interval: int = 1,
        backupCount: int = 0,
        encoding: str | None = None,
        delay: bool = False,
        utc: bool = False,
        atTime: dt.time | None = None,
        errors: str | None = None,
        *,
        maxBytes: int = 0,
        compress: bool = False,
        max_age: float | None = None,
        lock_file: str | None = None,
        **legacy: Any,
    ) -> None:
        compress, lock_file = _legacy_options(filename, legacy, compress, lock_file)
        self.policy = TimePolicy.create(when, interval, utc, atTime)
        if not isinstance(backupCount, int) or backupCount < 0:
            raise ConfigError(f"backupCount must be an int >= 0, got {backupCount!r}")
        if not isinstance(maxBytes, int) or maxBytes < 0:
            raise ConfigError(f"maxBytes must be an int >= 0, got {maxBytes!r}")
        logging.handlers.TimedRotatingFileHandler.__init__(
            self, filename, when, interval, backupCount, encoding, True, utc, atTime, errors
        )
        self.maxBytes = maxBytes
        self._slot_start = float("-inf")  # the slot our descriptor's file belongs to
        self._slot_end = float("-inf")
        self._setup(delay=delay, lock_file=lock_file, compress=compress, max_age=max_age)
        self.rolloverAt = int(self.policy.next_after(self.policy.start_of(dt.datetime.now().timestamp())))

    def _archives(self) -> TimedArchives:
        return TimedArchives(self.baseFilename, self.backupCount, self.compress, self.max_age, self.policy)

    @property
    def _slots(self) -> TimedArchives:
        archives = self._maintenance.archives
        assert isinstance(archives, TimedArchives)
        return archives

    def computeRollover(self, currentTime: float) -> int:
        """The clock boundary after ``currentTime`` (not ``currentTime + interval`` as in the stdlib)."""
        policy: TimePolicy | None = getattr(self, "policy", None)
        if policy is None:  # called by the stdlib constructor before our policy exists
            return int(super().computeRollover(int(currentTime)))
        return int(policy.next_after(policy.start_of(currentTime)))

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        return not (self._slot_start <= record.created < self._slot_end)

    def doRollover(self) -> None:
        """Rotate the live file now if it belongs to an earlier slot than the present one."""
        now = dt.datetime.now().timestamp()
        with self._lock_file.held():
            self._settle_locked(self.policy.start_of(now), split=False)

    def _fits_one_write(self, records: Sequence[logging.LogRecord], size: int) -> bool:
        first = min(r.created for r in records)
        last = max(r.created for r in records)
        if self.maxBytes and size > self.maxBytes:
            return False
        return (self._slot_start <= first and last < self._slot_end) or (
            self.policy.start_of(first) == self.policy.start_of(last)
        )

    def _emit_bytes(self, record: logging.LogRecord, data: bytes) -> None:
        created = record.created
        fd = self._fd
        if fd is not None and self._slot_start <= created < self._slot_end:
            # Our file is this record's slot. If another process renamed it into an archive, it still is the
            # right file for this record, as long as it was not compressed or deleted meanwhile.
            usable = not self._moved_lately() or (os.fstat(fd).st_nlink > 0 and not self._slot_reassigned())
            if usable and (not self.maxBytes or self._end + len(data) <= self.maxBytes):
                self._write_tracked(fd, data)
                return
        with self._lock_file.held():
            start = self.policy.start_of(created)
            target = self._settle_locked(start, split=bool(self.maxBytes), incoming=len(data))
            if target is not None:
                self._write_tracked(target, data)
            else:
                self._write_straggler(start, data)

    def _slot_reassigned(self) -> bool:
        """After a move: does the live path now hold a newer file for *our* slot (a size split)? Then use it."""
        state = _read_state(self._lock_file)
        return state is not None and state[1] == self._slot_start

    def _settle_locked(self, start: float, *, split: bool, incoming: int = 0) -> int | None:
        """Make the live file the one for slot ``start`` (rotating an older one); return the fd to write to.

        ``None`` means the record belongs to a slot *older* than the live file's (a straggler).
        """
        try:
            st = os.stat(self.baseFilename)
        except FileNotFoundError:
            st = None
        state = _read_state(self._lock_file)
        if st is None:
            fd = self._reopen()
            self._claim_slot(start)
            return fd
        if state is not None and state[0] == st.st_ino:
            live_start = state[1]
        elif st.st_size == 0:
            live_start = start  # an empty, unclaimed file (just created by someone's open) belongs to this record
        else:  # a file flocklog did not create (or whose state was lost): judged by its mtime, as the stdlib does
            live_start = self.policy.start_of(st.st_mtime)
        if start < live_start:
            return None
        if start > live_start or (split and st.st_size > 0 and st.st_size + incoming > self.maxBytes):
            if st.st_size > 0:
                self._slots.archive_live(live_start, self.rotate, self.rotation_filename)
                self._lock_file.bump()
                self._maintenance.kick()
            fd = self._reopen()
            self._claim_slot(start)
            return fd
        if self._fd is None or self._path_moved():
            self._reopen()
        self._set_slot(live_start)
        if state is None or state[0] != st.st_ino:
            self._claim_slot(live_start)
        return self._fd

    def _claim_slot(self, start: float) -> None:
        assert self._ident is not None
        self._lock_file.write_state(f"{self._ident[1]} {start!r}")
        self._set_slot(start)

    def _set_slot(self, start: float) -> None:
        self._slot_start = start
        self._slot_end = self.policy.next_after(start)
        self.rolloverAt = int(self._slot_end)

    def _write_straggler(self, start: float, data: bytes) -> None:
        """A record older than the live file: append it to its own slot's archive if that is still plain text."""
        archive = self._slots.plain_archive_for(start)
        if archive is None:
            self.misfiled += 1  # its slot's archive is gone or compressed: keep the record, in the live file
            assert self._fd is not None
            self._write(self._fd, data)
            return
        fd = os.open(archive, os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0))
        try:
            self._write(fd, data)
        finally:
            os.close(fd)

    misfiled = 0  # stragglers that could not be filed under their own slot


def _read_state(lock: RotationLock) -> tuple[int, float] | None:
    try:
        ino, start = lock.read_state().split()
        return int(ino), float(start)
    except ValueError:
        return None


def _legacy_options(
    base: str | os.PathLike[str], legacy: dict[str, Any], compress: bool, lock_file: str | None
) -> tuple[bool, str | None]:
    """Map the options users of ``concurrent-log-handler`` pass most, so migrating is one changed import."""
    if "use_gzip" in legacy:
        compress = bool(legacy.pop("use_gzip"))
    if "lock_file_directory" in legacy:
        directory = legacy.pop("lock_file_directory")
        if directory and lock_file is None:
            lock_file = os.path.join(str(directory), "." + os.path.basename(os.fspath(base)) + ".lock")
    for harmless in ("chmod", "umask", "owner", "newline", "terminator", "unicode_error_policy", "debug"):
        legacy.pop(harmless, None)
    if legacy:
        raise ConfigError(
            f"unsupported option(s) {', '.join(sorted(legacy))}: flocklog's handlers take the stdlib's arguments "
            "plus compress=, max_age= and lock_file="
        )
    return compress, lock_file


ConcurrentRotatingFileHandler = RotatingFileHandler
ConcurrentTimedRotatingFileHandler = TimedRotatingFileHandler
