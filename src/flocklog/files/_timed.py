"""Time rotation (``TimedRotatingFileHandler``): one file per clock slot, the live file's slot kept in the lock
file so that processes started at different moments agree, and each boundary is rotated once, by whoever gets
the lock first; optional size splits within a slot; stragglers filed under their own slot."""

from __future__ import annotations

import datetime as dt
import logging
import logging.handlers
import os
import re
import time
from collections.abc import Sequence
from typing import Any

from flocklog.errors import ConfigError
from flocklog.files._archives import TimedArchives
from flocklog.files._core import SafeFileMixin
from flocklog.files._lock import RotationLock
from flocklog.files._options import count_argument, options_from_arguments
from flocklog.files.policies import TimePolicy

MTIME_MARGIN = 0.05  # a live file last written this long before its claimed slot began belongs to an earlier one
# Bound at import: code (and CPython's own test suite) may replace the names in logging.handlers by ours.
_StdTimed = logging.handlers.TimedRotatingFileHandler


class TimedRotatingFileHandler(SafeFileMixin, _StdTimed):
    """Time-based (optionally also size-based) rotation at clock boundaries shared by every process.

    Same arguments, ``when`` values, suffixes and ``extMatch`` as :class:`logging.handlers.TimedRotatingFileHandler`.
    A record goes to the file of the slot its ``record.created`` falls in; the slot of the live file is kept in
    the lock file, so processes started at different times agree and each boundary is rotated exactly once. An
    archive name that exists is never reused: more archives for one slot are numbered, ``.1`` the newest.
    """

    _splits_alone = True  # maxBytes splits a slot's file whatever backupCount says

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
        opts = options_from_arguments(
            compress, use_gzip, max_age, lock_file, lock_file_directory, file_mode, chmod, umask, owner, newline,
            terminator, unicode_error_policy, keep_file_open, lock_per_record, rotate_on_start, debug, legacy,
        )  # fmt: skip
        if mode not in ("a", "w", "ab", "wb", "a+", "w+"):
            raise ConfigError(f"mode must be 'a' (append) or 'w' (truncate when first opened), got {mode!r}")
        self.policy = TimePolicy.create(when, count_argument("interval", interval, whole=True) or 0, utc, atTime)
        backup_count = count_argument("backupCount", backupCount, whole=True)
        self.maxBytes = count_argument("maxBytes", maxBytes, whole=False)
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
        state = read_slot_state(self._lock_file)
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
            if usable and self.maxBytes:
                self._end = os.lseek(fd, 0, os.SEEK_END)  # the size now, not after our last record (see emit)
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
        state = read_slot_state(self._lock_file)
        return state is not None and state[1] == self._slot_start

    def _settle_locked(self, start: float, *, split: bool, incoming: int = 0) -> int | None:
        """Make the live file the one for slot ``start`` (rotating an older one); return the fd to write to.

        ``None`` means the record belongs to a slot *older* than the live file's (a straggler).
        """
        try:
            st = os.stat(self.baseFilename)
        except FileNotFoundError:
            st = None
        state = read_slot_state(self._lock_file)
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


TimedRotatingFileHandler._own_methods = (TimedRotatingFileHandler.shouldRollover, TimedRotatingFileHandler.doRollover)


def read_slot_state(lock: RotationLock) -> tuple[int, float] | None:
    try:
        ino, start = lock.read_state().split()
        return int(ino), float(start)
    except ValueError:
        return None
