"""Which files make up a set's archives, how a rotation names the next one, and which ones retention removes.

Size sets are numbered (``app.log.1`` newest .. ``.N``), timed sets carry their slot's suffix; either may be
``.gz`` (compressed by ``_gzip``, scheduled by ``_maintenance``). Every method that renames or deletes is called
under the rotation lock.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from flocklog.files._gzip import _exists, _remove, _Snapshot, _snapshot, clean_leftovers, compress_archive
from flocklog.files._lock import Permissions, RotationLock
from flocklog.files.policies import TimePolicy

Rotate = Callable[[str, str], None]
Namer = Callable[[str], str]


def _shift_numbered(present: list[int], name: Callable[[int], str], limit: int | None) -> None:
    """Make room at ``.1``: the k-th newest numbered archive (``present``, ascending) moves to ``k + 2``.

    A process killed in the middle of a shift leaves a hole in the numbering (``.124`` renamed to ``.125``,
    ``.123`` not yet to ``.124``). The stdlib shifts each file by one, so the hole would travel up the set for
    ever and look like an archive that retention deleted; placing by rank closes it on the next rotation.
    Archives whose place would pass ``limit`` (``backupCount``) are deleted, oldest first, as in the stdlib.
    ``.gz`` twins move with their plain names. The caller holds the rotation lock.
    """
    target = {index: k + 2 for k, index in enumerate(present)}
    kept = []
    for index in reversed(present):
        if limit is not None and target[index] > limit:
            for ext in ("", ".gz"):
                _remove(name(index) + ext)
        else:
            kept.append(index)
    # Above the lowest hole every archive moves down (or stays), lowest first; below it each moves up by one,
    # highest first (``kept`` is highest first). Either way the name a file moves to is already free.
    down = [index for index in reversed(kept) if target[index] < index]
    up = [index for index in kept if target[index] > index]
    for index in down + up:
        to = name(target[index])
        for stale in ("", ".gz"):
            _remove(to + stale)
        for ext in ("", ".gz"):
            if _exists(name(index) + ext):
                os.rename(name(index) + ext, to + ext)


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
        """Gzip ``path`` (see ``_gzip``); False if it changed, vanished or another process is on it."""
        return compress_archive(path, lock, self.permissions, self.relocate)

    def clean_leftovers(self, now: float) -> None:
        clean_leftovers(self.directory, self.prefix, now)


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
        """The stdlib's rollover, aware of ``.gz`` twins and closing holes; the caller holds the rotation lock."""
        _shift_numbered(self._present(), self.name, self.backup_count)
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
        _shift_numbered(self._counters(stem), lambda index: f"{stem}.{index}", None)
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
