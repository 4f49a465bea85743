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

import codecs
import contextlib
import datetime as dt
import errno
import locale
import logging
import logging.handlers
import math
import os
import re
import stat
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flocklog import _lifecycle
from flocklog.errors import ConfigError
from flocklog.files._lock import Permissions, RotationLock
from flocklog.files._maintenance import Maintenance, SizeArchives, TimedArchives
from flocklog.files.policies import TimePolicy

PATH_CHECK_INTERVAL = 1.0  # seconds between checks that the path still names the file a process holds
MTIME_MARGIN = 0.05  # a live file last written this long before its claimed slot began belongs to an earlier one
CLOSE_TIMEOUT = 10.0  # at most this long close() waits for pending compression/retention, then hands it over
_FLAGS = os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
# Bound at import: code (and CPython's own test suite) may replace the names in logging.handlers by ours.
_StdRotating = logging.handlers.RotatingFileHandler
_StdTimed = logging.handlers.TimedRotatingFileHandler
_BOM_CODECS = {
    "utf-16": (codecs.BOM_UTF16, "utf-16-le" if sys.byteorder == "little" else "utf-16-be"),
    "utf-32": (codecs.BOM_UTF32, "utf-32-le" if sys.byteorder == "little" else "utf-32-be"),
    "utf-8-sig": (codecs.BOM_UTF8, "utf-8"),
}


class LogDirectoryNotFoundError(FileNotFoundError, ConfigError):
    """The log file's directory does not exist: a ``ConfigError`` and, as with the stdlib, a ``FileNotFoundError``."""


def _check_directory(path: str) -> None:
    """Fail at construction, with the reason, rather than on the first record in some worker much later."""
    directory = os.path.dirname(path) or "."
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        raise LogDirectoryNotFoundError(
            errno.ENOENT, f"log directory {directory!r} does not exist: create it, or point the handler elsewhere", path
        ) from None
    except PermissionError:
        raise ConfigError(
            f"log directory {directory!r} cannot be reached by this process (uid {_uid()}): "
            "a parent directory denies access"
        ) from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{directory!r} is not a directory, so {os.path.basename(path)!r} cannot live in it")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"log directory {directory!r} is not writable by this process (uid {_uid()})")
    if os.path.isdir(path):
        raise ConfigError(f"log file {path!r} is a directory")


def _uid() -> int:
    return os.getuid() if hasattr(os, "getuid") else -1


def _count(name: str, value: Any, *, whole: bool) -> Any:
    """``maxBytes``/``backupCount``/``interval``: any real number >= 0, as the stdlib accepts (``1024.0`` too)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
    if whole:
        if value != int(value):
            raise ConfigError(f"{name} must be a whole number, got {value!r}")
        return int(value)
    return int(value) if value == int(value) else value


def baseLockFilename(baseFilename: str) -> tuple[str, str]:
    """(directory, name) of a set's lock file: ``logs/app.log`` -> ``('logs', '.app.log.lock')``.

    Hidden, and not matched by ``app.log*`` (logrotate, log shippers, cleanup scripts) nor by ``*`` in a shell;
    it keeps the whole file name, so ``app.log`` and ``app.txt`` never share a lock; and it is not
    concurrent-log-handler's ``.__app.lock``, so a clh process left running during a migration never shares it.
    """
    directory, name = os.path.split(os.path.abspath(baseFilename))
    return directory, f".{name}.lock"


@dataclass
class _Options:
    """Everything beyond the stdlib's arguments, checked once (concurrent-log-handler's names included)."""

    compress: bool
    max_age: float | None
    lock_file: str | None
    lock_file_directory: str | None
    permissions: Permissions
    newline: str | None
    terminator: str | None
    unicode_error_policy: str | None
    keep_file_open: bool
    lock_per_record: bool
    rotate_on_start: bool
    debug: bool
    raw: dict[str, Any]  # the concurrent-log-handler options as given, exposed as attributes like clh does


def _options(
    *,
    compress: bool,
    use_gzip: bool | None,
    max_age: float | None,
    lock_file: str | os.PathLike[str] | None,
    lock_file_directory: str | os.PathLike[str] | None,
    file_mode: int | None,
    chmod: int | None,
    umask: int | None,
    owner: tuple[str | int, str | int] | list[str | int] | None,
    newline: str | None,
    terminator: str | None,
    unicode_error_policy: str | None,
    keep_file_open: bool,
    lock_per_record: bool | None,
    rotate_on_start: bool,
    debug: bool,
    legacy: dict[str, Any],
) -> _Options:
    legacy.pop("delay", None)  # concurrent-log-handler's own ``delay`` is accepted and ignored there too
    if legacy:
        raise ConfigError(
            f"unsupported option(s) {', '.join(sorted(legacy))}: flocklog's handlers take the stdlib's and "
            "concurrent-log-handler's arguments (see the README's option table)"
        )
    if max_age is not None and (isinstance(max_age, bool) or not isinstance(max_age, (int, float)) or max_age <= 0):
        raise ConfigError(f"max_age must be a positive number of seconds, got {max_age!r}")
    if file_mode is not None and chmod is not None and file_mode != chmod:
        raise ConfigError(f"file_mode={file_mode:#o} and chmod={chmod:#o} disagree: give one of them")
    bits = file_mode if file_mode is not None else chmod
    if bits is not None and (not isinstance(bits, int) or not 0 <= bits <= 0o7777):
        raise ConfigError(f"file_mode/chmod must be permission bits such as 0o640, got {bits!r}")
    if umask is not None:
        if not isinstance(umask, int) or not 0 <= umask <= 0o777:
            raise ConfigError(f"umask must be bits such as 0o027, got {umask!r}")
        if bits is None:
            bits = 0o666 & ~umask  # what a file created under that umask gets, without touching the process umask
    uid = gid = -1
    if owner is not None:
        uid, gid = _resolve_owner(owner)
    if newline not in (None, "", "\n", "\r", "\r\n"):
        raise ConfigError(f"newline must be None, '', '\\n', '\\r' or '\\r\\n', got {newline!r}")
    if unicode_error_policy is not None:
        try:
            codecs.lookup_error(unicode_error_policy)
        except LookupError:
            raise ConfigError(
                f"unicode_error_policy {unicode_error_policy!r} is not an error handler: use 'ignore', 'replace' "
                "or 'strict'"
            ) from None
    if lock_file is not None and lock_file_directory is not None:
        raise ConfigError("lock_file and lock_file_directory both say where the lock goes: give one of them")
    if lock_per_record is None:
        lock_per_record = os.name == "nt"  # appends are not atomic across processes on Windows
    if os.name == "nt" and not lock_per_record:
        raise ConfigError("lock_per_record=False cannot be honoured on Windows: appends are not atomic there")
    return _Options(
        compress=bool(compress if use_gzip is None else use_gzip),
        max_age=max_age,
        lock_file=os.fspath(lock_file) if lock_file is not None else None,
        lock_file_directory=os.fspath(lock_file_directory) if lock_file_directory is not None else None,
        permissions=Permissions(bits, uid, gid, enforce=file_mode is not None or chmod is not None or uid != -1),
        newline=newline,
        terminator=terminator,
        unicode_error_policy=unicode_error_policy,
        # Windows cannot rename a file another process holds open, so (as clh does there) none is kept open.
        keep_file_open=bool(keep_file_open) and os.name != "nt",
        lock_per_record=bool(lock_per_record),
        rotate_on_start=bool(rotate_on_start),
        debug=bool(debug),
        raw={"owner": owner, "chmod": bits, "umask": umask, "newline": newline, "use_gzip": bool(compress or use_gzip)},
    )


def _resolve_owner(owner: Any) -> tuple[int, int]:
    """concurrent-log-handler's ``owner=(user, group)``: names or ids, resolved now so a typo fails at once."""
    try:
        user, group = owner
    except (TypeError, ValueError):
        raise ConfigError(f"owner must be a (user, group) pair, got {owner!r}") from None
    try:
        import grp
        import pwd
    except ImportError:
        raise ConfigError("owner cannot be honoured on this platform (no users and groups)") from None
    try:
        uid = user if isinstance(user, int) else pwd.getpwnam(user).pw_uid
        gid = group if isinstance(group, int) else grp.getgrnam(group).gr_gid
    except KeyError as exc:
        raise ConfigError(f"owner {owner!r}: unknown user or group {exc}") from None
    return uid, gid


class _SafeFileMixin:
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

    def _setup(self, opts: _Options, *, delay: bool) -> None:
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
            _check_directory(self.baseFilename)
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
        # A subclass overriding shouldRollover/doRollover gets the stdlib's protocol (see _emit_with_overrides).
        names = ("shouldRollover", "doRollover")
        self._custom = any(getattr(type(self), n) is not own for n, own in zip(names, self._own_methods, strict=True))
        self._maintenance = Maintenance(self._lock_file, self._archives())
        self._maintenance.archives.permissions = opts.permissions
        _lifecycle.register(
            self,
            stage=_lifecycle.Stage.FILES,
            after_fork=_SafeFileMixin._after_fork,
            at_exit=_SafeFileMixin._at_exit,
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
            plain = not (self._special or self._custom or self.lock_per_record or not self.keep_file_open)
            if type(self).emit is not _SafeFileMixin.emit or not plain:  # overrides and strategies: emit's path
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


def _common(
    compress: bool,
    use_gzip: bool | None,
    max_age: float | None,
    lock_file: str | os.PathLike[str] | None,
    lock_file_directory: str | os.PathLike[str] | None,
    file_mode: int | None,
    chmod: int | None,
    umask: int | None,
    owner: Any,
    newline: str | None,
    terminator: str | None,
    unicode_error_policy: str | None,
    keep_file_open: bool,
    lock_per_record: bool | None,
    rotate_on_start: bool,
    debug: bool,
    legacy: dict[str, Any],
) -> _Options:
    return _options(
        compress=compress,
        use_gzip=use_gzip,
        max_age=max_age,
        lock_file=lock_file,
        lock_file_directory=lock_file_directory,
        file_mode=file_mode,
        chmod=chmod,
        umask=umask,
        owner=owner,
        newline=newline,
        terminator=terminator,
        unicode_error_policy=unicode_error_policy,
        keep_file_open=keep_file_open,
        lock_per_record=lock_per_record,
        rotate_on_start=rotate_on_start,
        debug=debug,
        legacy=legacy,
    )


class RotatingFileHandler(_SafeFileMixin, _StdRotating):
    """Size-based rotation that any number of processes can share; archives ``app.log.1`` .. ``app.log.N``.

    Same arguments and archive names as :class:`logging.handlers.RotatingFileHandler`; ``namer``/``rotator`` and
    overridden ``shouldRollover``/``doRollover`` are honoured. Extras (keyword-only) are listed in the README:
    ``compress``, ``max_age``, ``lock_file``, ``file_mode``, ``rotate_on_start``, ``lock_per_record`` and every
    concurrent-log-handler option.
    """

    def __init__(
        self,
        filename: str | os.PathLike[str],
        mode: str = "a",
        maxBytes: float = 0,
        backupCount: float = 0,
        encoding: str | None = None,
        delay: bool = False,
        errors: str | None = None,
        *,
        compress: bool = False,
        max_age: float | None = None,
        lock_file: str | os.PathLike[str] | None = None,
        file_mode: int | None = None,
        rotate_on_start: bool = False,
        lock_per_record: bool | None = None,
        use_gzip: bool | None = None,
        lock_file_directory: str | os.PathLike[str] | None = None,
        chmod: int | None = None,
        umask: int | None = None,
        owner: Any = None,
        newline: str | None = None,
        terminator: str | None = None,
        unicode_error_policy: str | None = None,
        keep_file_open: bool = True,
        debug: bool = False,
        **legacy: Any,
    ) -> None:
        opts = _common(
            compress, use_gzip, max_age, lock_file, lock_file_directory, file_mode, chmod, umask, owner, newline,
            terminator, unicode_error_policy, keep_file_open, lock_per_record, rotate_on_start, debug, legacy,
        )  # fmt: skip
        max_bytes = _count("maxBytes", maxBytes, whole=False)
        backup_count = _count("backupCount", backupCount, whole=True)
        # The stdlib opens a stream here unless delay; we never want its stream (one write per record is ours).
        _StdRotating.__init__(self, filename, mode, max_bytes, backup_count, encoding, True, errors)
        self._setup(opts, delay=delay)

    def _archives(self) -> SizeArchives:
        return SizeArchives(self.baseFilename, self.backupCount, self.compress, self.max_age, self.rotation_filename)

    @property
    def _sizes(self) -> SizeArchives:
        archives = self._maintenance.archives
        assert isinstance(archives, SizeArchives)
        return archives

    @property
    def _rotates(self) -> bool:
        return bool(self.maxBytes > 0 and self.backupCount > 0 and not self._special)

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        """The stdlib's question: would this record bring the live file to ``maxBytes`` or past it?"""
        if self._special or self.maxBytes <= 0:
            return False
        try:
            size = os.stat(self.baseFilename).st_size
        except FileNotFoundError:
            return False
        return size > 0 and size + len(self._encode(record)) >= self.maxBytes

    def doRollover(self) -> None:
        """Rotate now (``app.log`` -> ``app.log.1`` ...), under the rotation lock shared by every process."""
        if self._special:
            return
        self.acquire()
        try:
            with self._lock_file.held():
                if self._fd is None or self._path_moved():
                    self._open_fd() if self._fd is None else self._reopen()
                self._rotate_locked(force=True, incoming=0)
        finally:
            self.release()

    def _rotate_on_start_locked(self) -> None:
        if self.backupCount > 0:
            self._rotate_locked(force=True, incoming=0)

    def _rotate_locked(self, *, force: bool, incoming: int) -> None:
        assert self._fd is not None
        size = self._end = os.fstat(self._fd).st_size
        if not force and (size == 0 or size + incoming < self.maxBytes):
            return
        if self.backupCount > 0:
            self._sizes.backup_count = int(self.backupCount)  # the stdlib reads it at each rollover: so do we
            self._sizes.shift(self.rotate)
            self._lock_file.bump()
            self.num_rollovers += 1
            self._say(f"rotated at {size} bytes")
        self._reopen()
        self._maintenance.kick()

    def _fits_one_write(self, records: Sequence[logging.LogRecord], size: int) -> bool:
        # Only a chunk that fits in the live file as it is: one that does not is written record by record, so the
        # file is filled up to maxBytes before it rotates, as single emits would (never an archive half empty).
        return self.maxBytes <= 0 or self.backupCount <= 0 or self._end + size < self.maxBytes

    def _emit_bytes(self, record: logging.LogRecord, data: bytes) -> None:
        fd = self._fd
        if fd is None or self._moved_lately():
            fd = self._open_fd() if fd is None else self._reopen()
        if self._rotates and self._end + len(data) >= self.maxBytes:
            # Our file is full, or another process rotated it away from us (it was full): decide under the lock.
            with self._lock_file.held():
                if self._path_moved():
                    self._reopen()  # someone rotated while we waited: check the new file, do not rotate twice
                self._rotate_locked(force=False, incoming=len(data))
            fd = self._fd
            assert fd is not None
        self._write_tracked(fd, data)

    def _emit_locked(self, record: logging.LogRecord, data: bytes) -> None:
        """``lock_per_record``: look at the path, decide and write while holding the lock (exact ``maxBytes``)."""
        if self._fd is None or self._path_moved():
            self._open_fd() if self._fd is None else self._reopen()
        if self._rotates:
            self._rotate_locked(force=False, incoming=len(data))
        assert self._fd is not None
        self._write_tracked(self._fd, data)


class TimedRotatingFileHandler(_SafeFileMixin, _StdTimed):
    """Time-based (optionally also size-based) rotation at clock boundaries shared by every process.

    Same arguments, ``when`` values, suffixes and ``extMatch`` as :class:`logging.handlers.TimedRotatingFileHandler`.
    A record goes to the file of the slot its ``record.created`` falls in; the slot of the live file is kept in
    the lock file, so processes started at different times agree and each boundary is rotated exactly once. An
    archive name that exists is never reused: more archives for one slot are numbered, ``.1`` the newest.
    """

    def __init__(
        self,
        filename: str | os.PathLike[str],
        when: str = "h",
        interval: float = 1,
        backupCount: float = 0,
        encoding: str | None = None,
        delay: bool = False,
        utc: bool = False,
        atTime: dt.time | None = None,
        errors: str | None = None,
        *,
        maxBytes: float = 0,
        mode: str = "a",
        compress: bool = False,
        max_age: float | None = None,
        lock_file: str | os.PathLike[str] | None = None,
        file_mode: int | None = None,
        rotate_on_start: bool = False,
        lock_per_record: bool | None = None,
        use_gzip: bool | None = None,
        lock_file_directory: str | os.PathLike[str] | None = None,
        chmod: int | None = None,
        umask: int | None = None,
        owner: Any = None,
        newline: str | None = None,
        terminator: str | None = None,
        unicode_error_policy: str | None = None,
        keep_file_open: bool = True,
        debug: bool = False,
        **legacy: Any,
    ) -> None:
        opts = _common(
            compress, use_gzip, max_age, lock_file, lock_file_directory, file_mode, chmod, umask, owner, newline,
            terminator, unicode_error_policy, keep_file_open, lock_per_record, rotate_on_start, debug, legacy,
        )  # fmt: skip
        if mode not in ("a", "w", "ab", "wb", "a+", "w+"):
            raise ConfigError(f"mode must be 'a' (append) or 'w' (truncate when first opened), got {mode!r}")
        self.policy = TimePolicy.create(when, _count("interval", interval, whole=True) or 0, utc, atTime)
        backup_count = _count("backupCount", backupCount, whole=True)
        self.maxBytes = _count("maxBytes", maxBytes, whole=False)
        _StdTimed.__init__(
            self, filename, when, self.policy.interval, backup_count, encoding, True, utc, atTime, errors
        )
        self.mode = mode
        self._slot_start = float("-inf")  # the slot our descriptor's file belongs to
        self._slot_end = float("-inf")
        self._setup(opts, delay=delay)
        self.rolloverAt = self.computeRollover(time.time())

    def _archives(self) -> TimedArchives:
        return TimedArchives(
            self.baseFilename, self.backupCount, self.compress, self.max_age, self.policy, self._naming
        )

    def _naming(self) -> tuple[str, re.Pattern[str], Any]:
        """The handler's current suffix, extMatch and namer (the stdlib lets users set them after construction)."""
        ext = self.extMatch if isinstance(self.extMatch, re.Pattern) else re.compile(self.extMatch, re.ASCII)
        return self.suffix, ext, self.namer

    @property
    def _slots(self) -> TimedArchives:
        archives = self._maintenance.archives
        assert isinstance(archives, TimedArchives)
        return archives

    def computeRollover(self, currentTime: float) -> int:
        """The clock boundary after ``currentTime`` (not ``currentTime + interval`` as in the stdlib)."""
        policy: TimePolicy | None = getattr(self, "policy", None)
        if policy is None:  # called by the stdlib constructor before our policy exists
            return int(_StdTimed.computeRollover(self, int(currentTime)))
        return int(policy.next_after(policy.start_of(currentTime)))

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        """Does this record belong to a later slot than the live file (or, with ``maxBytes``, not fit in it)?"""
        if self._special:
            return False
        start = self.policy.start_of(record.created)
        with self._lock_file.held():
            live = self._live_slot_locked()
        if live is None:
            return False
        live_start, size = live
        if start > live_start:
            return True
        return bool(self.maxBytes and size > 0 and size + len(self._encode(record)) >= self.maxBytes)

    def doRollover(self) -> None:
        """Rotate the live file now, into its slot's archive; the new file belongs to the present slot."""
        if self._special:
            return
        self.acquire()
        try:
            now_start = self.policy.start_of(time.time())
            with self._lock_file.held():
                if self._fd is None:
                    self._open_fd()
                live = self._live_slot_locked()
                if live is not None and live[1] > 0:
                    self._archive_locked(live[0], final=live[0] < now_start)
                fd = self._reopen()
                self._claim_slot(now_start)
                self._end = os.fstat(fd).st_size
        finally:
            self.release()

    def _rotate_on_start_locked(self) -> None:
        live = self._live_slot_locked()
        if live is not None and live[1] > 0:
            now_start = self.policy.start_of(time.time())
            self._archive_locked(live[0], final=live[0] < now_start)
            self._reopen()
            self._claim_slot(now_start)

    def _archive_locked(self, live_start: float, *, final: bool) -> None:
        self._slots.backup_count = int(self.backupCount)  # the stdlib reads it at each rollover: so do we
        self._slots.archive_live(live_start, self.rotate, final=final)
        self._lock_file.bump()
        self.num_rollovers += 1
        self._say(f"rotated the file of slot {self.policy.suffix(live_start)}")
        self._maintenance.kick()

    def _live_slot_locked(self) -> tuple[float, int] | None:
        """(slot start, size) of the file at the path now, or ``None`` if there is none (call under the lock)."""
        try:
            st = os.stat(self.baseFilename)
        except FileNotFoundError:
            return None
        state = _read_state(self._lock_file)
        if state is not None and state[0] == st.st_ino:
            return self._claimed_start(state[1], st), st.st_size
        if st.st_size == 0:
            return None
        return self.policy.start_of(st.st_mtime), st.st_size

    def _claimed_start(self, claimed: float, st: os.stat_result) -> float:
        """The claimed slot, unless the file was last written before that slot began (its mtime set back, as
        CPython's own tests do, or a clock stepped back): then the slot of its mtime, as the stdlib judges it."""
        if st.st_size > 0 and st.st_mtime < claimed - MTIME_MARGIN:
            return self.policy.start_of(st.st_mtime)
        return claimed

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
            if usable and (not self.maxBytes or self._end + len(data) < self.maxBytes):
                self._write_tracked(fd, data)
                return
        with self._lock_file.held():
            self._emit_locked(record, data)

    def _emit_locked(self, record: logging.LogRecord, data: bytes) -> None:
        if self._fd is None:
            self._open_fd()
        start = self.policy.start_of(record.created)
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
            live_start = self._claimed_start(state[1], st)
        elif st.st_size == 0:
            live_start = start  # an empty, unclaimed file (just created by someone's open) belongs to this record
        else:  # a file flocklog did not create (or whose state was lost): judged by its mtime, as the stdlib does
            live_start = self.policy.start_of(st.st_mtime)
        if start < live_start:
            return None
        if start > live_start or (split and st.st_size > 0 and st.st_size + incoming >= self.maxBytes):
            if st.st_size > 0:
                self._archive_locked(live_start, final=start > live_start)
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


RotatingFileHandler._own_methods = (RotatingFileHandler.shouldRollover, RotatingFileHandler.doRollover)
TimedRotatingFileHandler._own_methods = (TimedRotatingFileHandler.shouldRollover, TimedRotatingFileHandler.doRollover)


def _read_state(lock: RotationLock) -> tuple[int, float] | None:
    try:
        ino, start = lock.read_state().split()
        return int(ino), float(start)
    except ValueError:
        return None


ConcurrentRotatingFileHandler = RotatingFileHandler
ConcurrentTimedRotatingFileHandler = TimedRotatingFileHandler
