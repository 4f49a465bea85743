"""Archive naming, gzip and retention, run by a background thread so the logging call never waits for them.

Crash safety: an archive is compressed into ``<archive>.gz.tmp`` (created with ``O_EXCL``, so one process claims
it, and ``flock``-ed while it is written), fsynced, then renamed into place under the rotation lock and only then is
the plain archive removed. A temp file nobody holds a lock on is a crashed compressor's leftover: it is removed once
it is older than :data:`STALE_TMP` (the age only covers the instant between creating and locking). An archive is
compressed only after it has been quiet for :data:`GRACE` seconds, because a process that lost the race to a
rotation may still append one record to it.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from flocklog.files._lock import Permissions, RotationLock

try:
    import fcntl
except ImportError:  # Windows: a temp file's liveness is judged by its age alone
    fcntl = None  # type: ignore[assignment]  # checked before each use
from flocklog.files.policies import TimePolicy

GRACE = 2.0  # seconds an archive must be untouched before it is compressed
STALE_TMP = 5.0  # an unlocked temp file older than this is a crashed compressor's leftover

Rotate = Callable[[str, str], None]
Namer = Callable[[str], str]


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


class _Archives:
    """What both archive kinds share: compressing one plain archive safely, and cleaning crash leftovers."""

    def __init__(self, base: str, backup_count: int, compress: bool, max_age: float | None) -> None:
        self.base = base
        self.directory = os.path.dirname(base) or "."
        self.prefix = os.path.basename(base) + "."
        self.backup_count = backup_count
        self.compress = compress
        self.max_age = max_age
        self.permissions = Permissions()  # owner to give the .gz files (the handler sets it)

    def plain_archives(self) -> list[str]:
        raise NotImplementedError

    def relocate(self, path: str, snap: _Snapshot) -> str | None:
        """Where the archive compressed from ``path`` lives now (size archives move on each rotation)."""
        now = _snapshot(path)
        return path if now == snap else None

    def retention(self, now: float) -> bool:
        """Delete what retention says must go (the caller holds the lock); True if anything was deleted."""
        raise NotImplementedError

    def pending(self, grace: float, now: float) -> list[str]:
        if not self.compress:
            return []
        quiet = []
        for path in self.plain_archives():
            snap = _snapshot(path)
            if snap is not None and now - snap.mtime_ns / 1e9 >= grace:
                quiet.append(path)
        return quiet

    def compress_one(self, path: str, lock: RotationLock) -> bool:
        """Gzip ``path`` off the lock; swap it in under the lock only if the archive did not change meanwhile."""
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
            self.permissions.apply(fd)
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
                current = self.relocate(path, snap)
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

    def clean_leftovers(self, now: float) -> None:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return
        for name in names:
            if name.startswith(self.prefix) and name.endswith(".gz.tmp"):
                path = os.path.join(self.directory, name)
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


class SizeArchives(_Archives):
    """``app.log.1`` (newest) .. ``app.log.N``, plain or ``.gz``, shifted by one on every rotation."""

    def __init__(self, base: str, backup_count: int, compress: bool, max_age: float | None, namer: Namer) -> None:
        super().__init__(base, backup_count, compress, max_age)
        self.namer = namer

    def name(self, index: int) -> str:
        return self.namer(f"{self.base}.{index}")

    def _present(self) -> list[int]:
        """Indices of the archives that exist, newest first, from one directory listing (not N lookups)."""
        if self.name(1) != f"{self.base}.1":  # a custom namer: names are unknowable, probe each index
            return [
                i for i in range(1, self.backup_count + 1) if _exists(self.name(i)) or _exists(self.name(i) + ".gz")
            ]
        pattern = re.compile(rf"^{re.escape(self.prefix)}(\d+)(?:\.gz)?$")
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        found = {int(m.group(1)) for m in map(pattern.match, names) if m}
        return sorted(i for i in found if 1 <= i <= self.backup_count)

    def shift(self, rotate: Rotate) -> None:
        """The stdlib's rollover, aware of ``.gz`` twins; the caller holds the rotation lock."""
        for index in reversed(self._present()):
            if index >= self.backup_count:
                for ext in ("", ".gz"):
                    _remove(self.name(index) + ext)  # the oldest goes, as in the stdlib
                continue
            for ext in ("", ".gz"):
                source = self.name(index) + ext
                if _exists(source):
                    for stale in ("", ".gz"):
                        _remove(self.name(index + 1) + stale)
                    os.rename(source, self.name(index + 1) + ext)
        for stale in ("", ".gz"):
            _remove(self.name(1) + stale)
        rotate(self.base, self.name(1))

    def plain_archives(self) -> list[str]:
        return [self.name(i) for i in self._present() if _exists(self.name(i))]

    def relocate(self, path: str, snap: _Snapshot) -> str | None:
        for index in self._present():
            candidate = self.name(index)
            if _snapshot(candidate) == snap:
                return candidate
        return None

    def retention(self, now: float) -> bool:
        if self.max_age is None:
            return False
        deleted = False
        for index in self._present():
            for ext in ("", ".gz"):
                path = self.name(index) + ext
                snap = _snapshot(path)
                if snap is not None and now - snap.mtime_ns / 1e9 > self.max_age:
                    _remove(path)
                    deleted = True
        return deleted


def _suffix_regex(suffix_format: str) -> re.Pattern[str]:
    """A pattern for what ``time.strftime(suffix_format, ...)`` produces (a suffix set after construction too)."""
    widths = {"Y": r"\d{4}", "y": r"\d{2}", "j": r"\d{3}", "%": "%"}
    out, i = [], 0
    while i < len(suffix_format):
        ch = suffix_format[i]
        if ch == "%" and i + 1 < len(suffix_format):
            code = suffix_format[i + 1]
            out.append(widths.get(code, r"\d{2}" if code in "mdHMSIUWVGuw" else r".+?"))
            i += 2
            continue
        out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out))


class TimedArchives(_Archives):
    """``app.log.<slot suffix>``; more archives for one slot (size splits, a manual rollover) get ``.1``, ``.2`` ...

    Numbering follows the stdlib's direction: ``.1`` is the newest split of its slot, the unnumbered name the
    slot's final part; an archive that exists is never overwritten (a second final part is shifted in as ``.1``).
    The suffix, ``extMatch`` and ``namer`` are read from the handler at each use, so setting them after
    construction works as with the stdlib, and a custom namer does not hide archives from ``backupCount``.
    """

    def __init__(
        self,
        base: str,
        backup_count: int,
        compress: bool,
        max_age: float | None,
        policy: TimePolicy,
        naming: Callable[[], tuple[str, re.Pattern[str], Namer | None]],
    ) -> None:
        super().__init__(base, backup_count, compress, max_age)
        self.policy = policy
        self.naming = naming  # () -> (suffix format, extMatch, namer or None), read live from the handler

    def _stem(self, slot_start: float) -> str:
        suffix_format, _, namer = self.naming()
        stem = f"{self.base}.{self.policy.suffix(slot_start, suffix_format)}"
        return namer(stem) if namer else stem

    def _counters(self, stem: str) -> list[int]:
        directory, name = os.path.split(stem)
        pattern = re.compile(rf"^{re.escape(name)}\.(\d+)(?:\.gz)?$")
        try:
            names = os.listdir(directory or ".")
        except FileNotFoundError:
            return []
        return sorted({int(m.group(1)) for m in map(pattern.match, names) if m})

    def archive_live(self, slot_start: float, rotate: Rotate, *, final: bool) -> str:
        """Rename the live file into its slot's archives; the caller holds the lock.

        ``final``: the slot is over, so the live file becomes the unnumbered archive if that name is free.
        Otherwise (a size split, a manual rollover, or a name taken) the slot's numbered archives shift up by one
        and the live file becomes ``.1``, the newest.
        """
        stem = self._stem(slot_start)
        if final and not (_exists(stem) or _exists(stem + ".gz")):
            rotate(self.base, stem)
            return stem
        for index in reversed(self._counters(stem)):
            for ext in ("", ".gz"):
                source = f"{stem}.{index}{ext}"
                if _exists(source):
                    os.rename(source, f"{stem}.{index + 1}{ext}")
        rotate(self.base, f"{stem}.1")
        return f"{stem}.1"

    def _recognise(self, name: str) -> tuple[str, int, bool] | None:
        """(suffix text, counter, compressed) if ``name`` is an archive of this set."""
        suffix_format, ext_match, namer = self.naming()
        finder = _suffix_regex(suffix_format)
        core, gz = (name[:-3], True) if name.endswith(".gz") else (name, False)
        tries = [(core, 0)]
        numbered = re.fullmatch(r"(.*)\.(\d+)", core)
        if numbered:
            tries.insert(0, (numbered.group(1), int(numbered.group(2))))
        base_name = os.path.basename(self.base)
        for stem, counter in tries:
            if namer is None:
                if not stem.startswith(self.prefix):
                    continue
                part = stem[len(self.prefix) :]
                match = ext_match.match(part)
                if match and match.end() == len(part) and finder.fullmatch(part):
                    return part, counter, gz
                continue
            for found in finder.finditer(stem):
                if os.path.basename(namer(f"{self.base}.{found.group(0)}")) == stem and stem != base_name:
                    return found.group(0), counter, gz
        return None

    def _listing(self) -> list[tuple[float, int, str, bool]]:
        """(slot start, age rank, path, compressed) of every archive of this set, oldest first."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        suffix_format = self.naming()[0]
        found = []
        for name in names:
            recognised = self._recognise(name)
            if recognised is None:
                continue
            text, counter, gz = recognised
            try:
                start = self.policy.parse_suffix(text, suffix_format)
            except ValueError:
                continue
            # Oldest first: within a slot the highest number is the oldest split, the unnumbered part the newest.
            found.append((start, -counter if counter else 0, os.path.join(self.directory, name), gz))
        return sorted(found)

    def plain_archives(self) -> list[str]:
        return [path for _, _, path, compressed in self._listing() if not compressed]

    def plain_archive_for(self, slot_start: float) -> str | None:
        matches = [p for s, _, p, gz in self._listing() if s == slot_start and not gz]
        return matches[-1] if matches else None  # the newest archive of that slot

    def retention(self, now: float) -> bool:
        listing = self._listing()
        doomed: set[str] = set()
        if self.backup_count > 0 and len(listing) > self.backup_count:
            doomed.update(path for _, _, path, _ in listing[: len(listing) - self.backup_count])
        if self.max_age is not None:
            for start, _, path, _ in listing:
                if self.policy.next_after(start) < now - self.max_age:
                    doomed.add(path)
        for path in doomed:
            _remove(path)
        return bool(doomed)


class Maintenance:
    """One background thread per handler and process: compression, retention and leftover cleaning."""

    def __init__(self, lock: RotationLock, archives: SizeArchives | TimedArchives) -> None:
        self.lock = lock.sibling()  # its own descriptor, so the lock excludes this thread and the logging threads
        self.archives = archives
        self.errors = 0  # maintenance failures (reported to stderr once each, never raised into the app)
        self.handed_over = 0  # closes that left work (archives still in their quiet period) to the next opener
        self._event = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._busy = threading.Lock()

    @property
    def needed(self) -> bool:
        a = self.archives
        return a.compress or a.max_age is not None or (isinstance(a, TimedArchives) and a.backup_count > 0)

    def kick(self) -> None:
        """Start (or wake) the worker: after a rotation, and when a handler opens the set (to finish leftovers)."""
        if not self.needed or self._stopping:
            return
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="flocklog-maintenance", daemon=True)
            self._thread.start()
        self._event.set()

    def _loop(self) -> None:
        try:
            self._work()
        finally:
            if self._stopping:
                with self._busy:
                    self.lock.forget()

    def _work(self) -> None:
        while not self._stopping:
            self._event.wait(timeout=GRACE)
            self._event.clear()
            if self._stopping:
                return
            try:
                more = self.run_once(GRACE)
            except Exception as exc:  # never let maintenance kill the app; count and say why
                self.errors += 1
                os.write(2, f"flocklog: archive maintenance failed for {self.archives.base}: {exc!r}\n".encode())
                more = True
            if not more:
                return  # idle: the next rotation starts a new thread

    def run_once(self, grace: float) -> bool:
        """One pass; returns True while archives still wait for their quiet period."""
        with self._busy:
            now = time.time()
            self.archives.clean_leftovers(now)
            with self.lock.held():
                if self.archives.retention(now):
                    self.lock.bump()
            for path in self.archives.pending(grace, now):
                self.archives.compress_one(path, self.lock)
            return bool(self.archives.compress and self.archives.plain_archives())

    def drain(self, timeout: float) -> bool:
        """Compress and apply retention now, ignoring the quiet period (writers are done)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.run_once(0.0):
                return True
            time.sleep(0.05)
        return False

    def finish(self, timeout: float) -> bool:
        """At ``close()``: do the pending work, waiting at most ``timeout`` seconds; True if nothing is left.

        The quiet period is still honoured (another process may append one last record to a fresh archive), so
        this waits for it when an archive is younger than :data:`GRACE`. Whatever is left after ``timeout`` is
        handed over: the next handler that opens the set runs a pass at once (see :meth:`kick`).
        """
        if not self.needed:
            return True
        deadline = time.monotonic() + timeout
        while True:
            try:
                more = self.run_once(GRACE)
            except Exception as exc:  # never raise from close(); count and say why
                self.errors += 1
                os.write(2, f"flocklog: archive maintenance failed for {self.archives.base}: {exc!r}\n".encode())
                return False
            remaining = deadline - time.monotonic()
            if not more:
                return True
            if remaining <= 0:
                self.handed_over += 1
                return False
            time.sleep(min(0.1, remaining))

    def stop(self) -> None:
        """Ask the worker to finish; it closes its lock descriptor on the way out (or here, if it is not running)."""
        self._stopping = True
        self._event.set()
        if self._busy.acquire(blocking=False):
            try:
                if self._thread is None or not self._thread.is_alive():
                    self.lock.forget()
            finally:
                self._busy.release()

    def after_fork(self) -> None:
        self.lock.forget()  # the parent's descriptor (and any lock it holds) is not ours
        self._thread = None
        self._event = threading.Event()
        self._busy = threading.Lock()
        self._stopping = False
