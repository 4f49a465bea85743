"""The write path both handlers share: the handler's own ``O_APPEND`` descriptor, one ``os.write`` per record,
noticing that another process rotated the file away, counted drops, batches, fork and exit hooks.

The size and time handlers plug their rotation into :meth:`SafeFileMixin._emit_bytes` (the lock-free append
strategy) and :meth:`SafeFileMixin._emit_locked` (decide and write under the rotation lock: ``lock_per_record``
and every rotation). Fields belong to the handler and are used under its ``logging`` lock; the maintenance thread
has its own lock descriptor and touches none of them.
"""

from __future__ import annotations

import codecs
import contextlib
import locale
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from flocklog import _lifecycle
from flocklog.errors import ConfigError
from flocklog.files._archives import SizeArchives, TimedArchives
from flocklog.files._lock import RotationLock, baseLockFilename
from flocklog.files._maintenance import Maintenance
from flocklog.files._options import Options, check_directory

PATH_CHECK_INTERVAL = 1.0  # seconds between checks that the path still names the file a process holds
CLOSE_TIMEOUT = 10.0  # at most this long close() waits for pending compression/retention, then hands it over
_FLAGS = os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_BOM_CODECS = {
    "utf-16": (codecs.BOM_UTF16, "utf-16-le" if sys.byteorder == "little" else "utf-16-be"),
    "utf-32": (codecs.BOM_UTF32, "utf-32-le" if sys.byteorder == "little" else "utf-32-be"),
    "utf-8-sig": (codecs.BOM_UTF8, "utf-8"),
}


def _is_message_only(fmt: logging.Formatter) -> bool:
    """A formatter whose output is the record's message alone (``%(message)s``, %-style, no defaults)."""
    style = fmt._style
    return type(style) is logging.PercentStyle and style._fmt == "%(message)s" and not getattr(style, "_defaults", None)


class SafeFileMixin:
    """The write path shared by both handlers: own descriptor, inode checks, counted drops, fork reset."""

    baseFilename: str
    encoding: str | None
    errors: str | None
    terminator: str
    mode: str
    delay: bool
    maxBytes: Any
    backupCount: int
    num_rollovers: int
    _own_methods: tuple[Any, Any]

    baseLockFilename = staticmethod(baseLockFilename)
    _splits_alone = False  # maxBytes rotates without backupCount (the timed handler's size splits): no
    _slot_start = float("-inf")  # the time slot our file may take records of: all time, unless a timed handler
    _slot_end = float("inf")

    def _setup(self, opts: Options, *, delay: bool) -> None:
        self.delay = delay
        self.compress = opts.compress
        self.max_age = opts.max_age
        self.keep_file_open = opts.keep_file_open
        self.lock_per_record = opts.lock_per_record
        self.rotate_on_start = opts.rotate_on_start
        self.debug = opts.debug
        self.permissions = opts.permissions
        self.owner, self.chmod, self.umask = opts.raw["owner"], opts.raw["chmod"], opts.raw["umask"]
        self.newline, self.use_gzip = opts.raw["newline"], opts.raw["use_gzip"]
        self.unicode_error_policy = opts.unicode_error_policy
        self.num_rollovers = 0  # rotations this handler performed (concurrent-log-handler's counter)
        self.dropped = 0  # records that could not be written (full disk, I/O error); each went to handleError
        if opts.terminator is not None:
            self.terminator = opts.terminator
        self._newline = os.linesep if opts.newline is None else (opts.newline or "\n")
        self._text_errors = self.errors or opts.unicode_error_policy or "strict"
        # A device, FIFO or other non-regular file (os.devnull, /dev/stdout): written to, never rotated or locked.
        self._special = os.path.exists(self.baseFilename) and not os.path.isfile(self.baseFilename)
        if not self._special:
            check_directory(self.baseFilename)
        legacy = None
        if opts.lock_file:
            lock_path = os.path.abspath(opts.lock_file)
        else:
            directory, name = self.baseLockFilename(self.baseFilename)
            if opts.lock_file_directory:
                directory = os.path.abspath(opts.lock_file_directory)
            else:
                legacy = self.baseFilename + ".lock"  # flocklog 0.1's name, still honoured for one release
            lock_path = os.path.join(directory, name)
        self._lock_file = RotationLock(lock_path, legacy, opts.permissions)
        self._gen_seen = b""
        self._fd: int | None = None
        self._ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the file our descriptor holds
        self._needs_newline = False
        self._end = 0  # file offset after our last write: the file's size then, all writers included
        self._next_check = 0.0  # monotonic time of the next "is the path still our file?" check
        self._truncate_first = self.mode.startswith("w")
        self._opened = False  # the set was opened once (lock file checked, leftovers handed to maintenance)
        codec = self.encoding if self.encoding not in (None, "locale") else locale.getpreferredencoding(False)
        try:
            name = codecs.lookup(codec or "utf-8").name
        except LookupError:
            raise ConfigError(f"unknown encoding {self.encoding!r}") from None
        self._bom, self._codec = _BOM_CODECS.get(name, (b"", name))
        # Stateful encoders (shift sequences) encode a joined text differently from its parts: no batch join there.
        self._joinable = not (name in ("utf-7", "hz") or name.startswith("iso2022"))
        # A subclass overriding shouldRollover/doRollover gets the stdlib's protocol (see _emit_with_overrides).
        names = ("shouldRollover", "doRollover")
        self._custom = any(getattr(type(self), n) is not own for n, own in zip(names, self._own_methods, strict=True))
        # The lock-free append strategy's fast path in emit (pread: POSIX; Windows always locks per record).
        self._appends = not self._special and not self._custom and hasattr(os, "pread")
        self._bom_floor = 1 if self._bom else 0  # a file still empty may need a byte-order mark: the slow path
        self._maintenance = Maintenance(self._lock_file, self._archives())
        self._maintenance.archives.permissions = opts.permissions
        _lifecycle.register(
            self,
            stage=_lifecycle.Stage.FILES,
            after_fork=SafeFileMixin._after_fork,
            at_exit=SafeFileMixin._at_exit,
            sigterm=False,
        )
        if not delay:
            try:
                self._first_open()
            except OSError as exc:
                raise ConfigError(f"cannot open {self.baseFilename!r}: {exc.strerror or exc}") from None

    def _archives(self) -> SizeArchives | TimedArchives:
        raise NotImplementedError

    @property
    def lock_file(self) -> str:
        """The rotation lock's path (the previous release's ``<file>.lock`` while that one exists)."""
        return self._lock_file.path

    def _say(self, message: str) -> None:
        if self.debug:  # concurrent-log-handler's debug=True: a trace of rotations on stderr
            with contextlib.suppress(OSError):
                os.write(2, f"flocklog [{os.getpid()}] {self.baseFilename}: {message}\n".encode())

    # -- descriptor management
    def _first_open(self) -> int:
        """The first open of the set by this handler: lock file, rotate_on_start, leftovers of earlier runs."""
        if self._special:
            return self._reopen()
        self._opened = True
        with self._lock_file.held():
            first = self._lock_file.announce_first()
            fd = self._reopen()
            if self.rotate_on_start and first and os.fstat(fd).st_size > 0:
                self._say("rotate_on_start: rotating the live file left by an earlier run")
                self._rotate_on_start_locked()
                fd = self._fd if self._fd is not None else self._reopen()
        self._maintenance.kick()  # finish compression/retention an earlier process handed over
        return fd

    def _rotate_on_start_locked(self) -> None:
        raise NotImplementedError

    def _reopen(self) -> int:
        self._close_fd()
        if not self._special:
            self._gen_seen = self._lock_file.generation()  # read before opening: a later rotation is seen next time
        flags = _FLAGS | (os.O_TRUNC if self._truncate_first else 0)
        self._truncate_first = False
        fd = self.permissions.open(self.baseFilename, flags) if not self._special else os.open(self.baseFilename, flags)
        st = os.fstat(fd)
        self._fd, self._ident, self._end = fd, (st.st_dev, st.st_ino), st.st_size
        self._next_check = time.monotonic() + PATH_CHECK_INTERVAL
        return fd

    def _open_fd(self) -> int:
        if self._fd is not None:
            return self._fd
        return self._reopen() if self._opened or self._special else self._first_open()

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
        if self._bom and self._end == 0 and fd == self._fd:
            data = self._with_bom(fd, data)
        self._write(fd, data)
        if fd == self._fd:
            self._end = os.lseek(fd, 0, os.SEEK_CUR)  # O_APPEND: where our record ended is the file's size

    def _with_bom(self, fd: int, data: bytes) -> bytes:
        """A byte-order mark goes once, at the start of a new file: decided under the lock, so only one writer."""
        if self._special:
            return data
        with self._lock_file.held():
            return self._bom + data if os.fstat(fd).st_size == 0 else data

    def _at_exit(self) -> None:
        """A process ending without ``close()`` (a ``multiprocessing`` child): finish or hand over pending work."""
        if self._opened:
            self._maintenance.finish(CLOSE_TIMEOUT)

    def _after_fork(self) -> None:
        # The O_APPEND descriptor may be shared with the parent; the lock descriptor and the thread may not.
        self._lock_file.forget()
        self._maintenance.after_fork()

    # -- the write path
    def _encode(self, record: logging.LogRecord) -> bytes:
        text: str = self.format(record) + self.terminator  # type: ignore[attr-defined]  # logging.Handler.format
        if self._newline != "\n":
            text = text.replace("\n", self._newline)
        return text.encode(self._codec, self._text_errors)

    def _write(self, fd: int, data: bytes, done: int = 0) -> None:
        """Write all of ``data`` (from ``done`` on: the bytes a first, short ``os.write`` already wrote)."""
        if self._needs_newline and not done:
            # A record was cut short (disk full): end that line so the next record is not glued to it.
            os.write(fd, b"\n")
            self._needs_newline = False
        view = memoryview(data)
        while done < len(data):
            try:
                done += os.write(fd, view[done:])
            except OSError:
                if done:
                    self._needs_newline = True
                raise

    def emit(self, record: logging.LogRecord) -> None:
        """Write one record with one ``os.write``; failures go to ``handleError`` and are counted, never raised.

        The common case (our file is open, nothing rotated since our last record, the record fits the file and
        its time slot) is spelled out here, with no call but the formatter's and the syscalls themselves (one
        ``pread`` of the generation counter, an ``lseek`` for the file's size only when size rotation needs it,
        the ``write``): every other case takes the general path, which decides under the rotation lock.
        """
        try:
            if self._appends and self.keep_file_open and not self.lock_per_record:
                text = self.format(record) + self.terminator  # type: ignore[attr-defined]  # logging.Handler
                if self._newline != "\n":
                    text = text.replace("\n", self._newline)
                data = text.encode(self._codec, self._text_errors)
                fd = self._fd
                size = len(data)
                max_bytes = self.maxBytes
                tracks = max_bytes > 0 and (self._splits_alone or self.backupCount > 0)
                gen_fd = self._lock_file.read_fd
                if (
                    fd is not None
                    and gen_fd is not None
                    and self._slot_start <= record.created < self._slot_end
                    and self._end >= self._bom_floor
                    and not self._needs_newline
                    and time.monotonic() < self._next_check
                    and os.pread(gen_fd, 8, 0) == self._gen_seen
                ):
                    # The file's size now, all writers included, asked just before the write: a file overshoots
                    # maxBytes only by what other processes write in that instant, never by what we learnt late.
                    if tracks:
                        self._end = os.lseek(fd, 0, os.SEEK_END)
                    if not tracks or self._end + size < max_bytes:
                        written = os.write(fd, data)
                        if written < size:  # a short write (a signal, a full disk): finish it the careful way
                            self._write(fd, data, written)
                        self._end += size
                        return
                self._emit_bytes(record, data)
                return
            if self._special:
                self._write(self._open_fd(), self._encode(record))
            elif self._custom:
                self._emit_with_overrides(record)
            else:
                data = self._encode(record)
                if self.lock_per_record:
                    with self._lock_file.held():
                        self._emit_locked(record, data)
                else:
                    self._emit_bytes(record, data)
            if not self.keep_file_open:
                self._close_fd()
        except Exception:
            self.dropped += 1
            self._next_check = 0.0  # after a failure (full disk, removed file) look at the path again at once
            self.handleError(record)  # type: ignore[attr-defined]  # logging.Handler.handleError

    def _emit_with_overrides(self, record: logging.LogRecord) -> None:
        """The stdlib's ``emit`` (ask ``shouldRollover``, maybe ``doRollover``, write), under the rotation lock."""
        with self._lock_file.held():
            if self._fd is None or self._path_moved():
                self._open_fd() if self._fd is None else self._reopen()
            if self.shouldRollover(record):  # type: ignore[attr-defined]
                self.doRollover()  # type: ignore[attr-defined]
            fd = self._open_fd()
            self._write_tracked(fd, self._encode(record))

    def _emit_bytes(self, record: logging.LogRecord, data: bytes) -> None:
        raise NotImplementedError

    def _emit_locked(self, record: logging.LogRecord, data: bytes) -> None:
        raise NotImplementedError

    def _writes_plainly(self) -> bool:
        """Does :meth:`emit_batch` take its one-write path: a regular file kept open, flocklog's own ``emit`` and
        rollover, no lock per record?"""
        return type(self).emit is SafeFileMixin.emit and not (
            self._special or self._custom or self.lock_per_record or not self.keep_file_open
        )

    @property
    def writes_without_waiting(self) -> bool:
        """Is a batch to this handler only a copy into the page cache that waits on no one (its one-write path,
        and no subclass's ``emit_batch``)? The hub's connection thread writes small batches itself only to such
        handlers: a FIFO, a ``flock`` or a subclass's code could block it, and with it every connection and status
        request."""
        return type(self).emit_batch is SafeFileMixin.emit_batch and self._writes_plainly()

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
            if not self._writes_plainly():  # overrides and strategies: emit's path
                for record in records:
                    self.emit(record)
                return
            chunks: list[bytes] | None = None
            try:
                lines = self._plain_lines(records)
                if lines is not None:  # the hub's case: the text of each line is its record's msg
                    terminator: str = self.terminator
                    data = (terminator.join(lines) + terminator).encode(self._codec, self._text_errors)
                else:
                    chunks = [self._encode(record) for record in records]
                    data = b"".join(chunks)
            except Exception:  # one record cannot be formatted: each is then counted (or written) on its own
                for record in records:
                    self.emit(record)
                return
            if not self._fits_one_write(records, len(data)):
                if chunks is None:
                    chunks = [self._encode(record) for record in records]
                for record, chunk in zip(records, chunks, strict=True):
                    self._emit_encoded(record, chunk)
                return
            self._emit_encoded(records[-1], data, count=len(records))
        finally:
            self.release()  # type: ignore[attr-defined]  # logging.Handler.release

    def _plain_lines(self, records: Sequence[logging.LogRecord]) -> list[str] | None:
        """Each record's line when formatting could only return its ``msg``, else None (format each one).

        That is the hub's writer: its records carry the client's formatted text in ``msg``, no args, no exception
        or stack, and the hub's handlers default to ``%(message)s``. ``Formatter.format`` costs ~0.4 µs a record
        to return that same string (measured); the hub's CPU per record is what this batch path exists for. Only
        a plain ``logging.Formatter`` of exactly ``%(message)s`` qualifies (a subclass may do anything), with
        ``\\n`` line ends, a stateless encoding and exact ``LogRecord`` instances; ``record.message`` is not set,
        as no formatter ran.
        """
        if (
            type(self).format is not logging.Handler.format  # type: ignore[attr-defined]
            or self._newline != "\n"
            or not self._joinable
        ):
            return None
        # Handler.format's choice: its formatter, else logging's default (which is "%(message)s")
        fmt = getattr(self, "formatter", None) or logging._defaultFormatter  # type: ignore[attr-defined]
        if type(fmt) is not logging.Formatter or not _is_message_only(fmt):
            return None
        lines = [
            r.msg
            for r in records
            if type(r) is logging.LogRecord  # a record factory's subclass may override getMessage
            and type(r.msg) is str
            and not r.args
            and not r.exc_info
            and not r.exc_text
            and not r.stack_info
        ]
        return lines if len(lines) == len(records) else None

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
        """Close the file; pending compression/retention is finished within :data:`CLOSE_TIMEOUT` or handed over."""
        self.acquire()  # type: ignore[attr-defined]  # logging.Handler.acquire
        try:
            self._close_fd()
            if self._opened:
                self._maintenance.finish(CLOSE_TIMEOUT)
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
