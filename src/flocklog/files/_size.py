"""Size rotation (``RotatingFileHandler``): ``app.log`` -> ``app.log.1`` .. ``.N`` once a record would reach
``maxBytes``, decided by one process at a time under the rotation lock, written by all without one."""

from __future__ import annotations

import logging
import logging.handlers
import os
from collections.abc import Sequence
from typing import Any

from flocklog.files._archives import SizeArchives
from flocklog.files._core import SafeFileMixin
from flocklog.files._options import count_argument, options_from_arguments

# Bound at import: code (and CPython's own test suite) may replace the names in logging.handlers by ours.
_StdRotating = logging.handlers.RotatingFileHandler


class RotatingFileHandler(SafeFileMixin, _StdRotating):
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
        opts = options_from_arguments(
            compress, use_gzip, max_age, lock_file, lock_file_directory, file_mode, chmod, umask, owner, newline,
            terminator, unicode_error_policy, keep_file_open, lock_per_record, rotate_on_start, debug, legacy,
        )  # fmt: skip
        max_bytes = count_argument("maxBytes", maxBytes, whole=False)
        backup_count = count_argument("backupCount", backupCount, whole=True)
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
        elif self._rotates:
            self._end = os.lseek(fd, 0, os.SEEK_END)  # the size now, not after our last record (see emit)
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


RotatingFileHandler._own_methods = (RotatingFileHandler.shouldRollover, RotatingFileHandler.doRollover)
