"""The hub's exactly-once journal: the last batch seq written per client, and the batch being written, on disk.

Why a journal and not only a watermark: a SIGKILL has three windows in which a watermark written after each batch is not
enough, all seen in the 100-kill script: (1) between the batch's ``write`` and its watermark entry (two system calls;
the writer may even wait for the GIL in between) the batch is on disk and unrecorded, so the resend was written again;
(2) Linux stops a long ``write`` of a killed process between pages, so the file kept the first part of a batch, whose
last record was cut in the middle (a torn line), and the resend wrote all of it again (duplicates, and the torn line
swallowed the start of the next record); (3) an entry cut short by the kill was ignored on load but left in place, the
next hub appended after it, and the load after the next restart stopped at the garbage, forgetting every later entry.

So each new batch is framed by two entries: *begin* ``[cid, seq, [[path, dev, ino, size], ...]]`` (the size of each file
handler's file before the batch) and *done* ``[cid, seq]`` after it. A hub that starts and finds a begin with no done
(:attr:`Watermarks.dangling`) cuts those files back to their sizes (:func:`roll_back`): the batch is then either not on
disk at all or fully there and recorded, and the client's resend is written or skipped accordingly. The writer commits
the batches waiting together as one group (one write per file): its begin ``[cid, seq, marks, [cid, seq, cid2, seq2,
...]]`` names every batch of the group, their done entries follow in one ``os.write``, and only when all of them were
read back does the load remember any: a kill that cut the done entries short leaves the whole group dangling, rolled
back and unremembered, so every resend is written once. A hub of an older version does not read such a begin (four
fields): downgraded right after a crash that cut a group short, it neither rolls the group's files back nor skips its
resends, so that group may show a torn line and its records twice. A torn last entry is cut off the file on load.
Entries are ``uint32 length + msgpack``, one ``os.write`` each (a group's done entries: one for all); the page cache
survives a killed process (a power loss may lose the last entries: no fsync per batch). The log is compacted
(temporary file, then rename) past a few MiB.

Limits (said in the README): the roll-back assumes the hub is the only writer of its files (it cuts back to a size;
another process appending meanwhile would lose its lines, so the file's identity is checked and nothing is cut when the
file was replaced); a batch that was being written to a handler without a file (stdout, syslog, OTLP) cannot be taken
back, so those get the batch again after a crash in that window (at least once).

Shared state: every field belongs to whichever thread holds the writer's ``commit_lock`` (the writer thread, or the loop
committing a small batch; the hub's constructor before they start); no lock of its own.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import struct
from collections.abc import Sequence

from flocklog.errors import FrameError
from flocklog.hub import frames
from flocklog.hub._crashpoints import CrashPoints, die

log = logging.getLogger("flocklog.hub")

_ENTRY_HEADER = struct.Struct(">I")
_COMPACT_AT = 4 * 1024 * 1024

#: A file as a batch found it: path, st_dev, st_ino, size (-1: it did not exist yet).
FileMark = tuple[str, int, int, int]


def file_marks(handlers: Sequence[logging.Handler]) -> list[FileMark]:
    """The files ``handlers`` write, as they are before a batch: what a roll-back cuts them back to."""
    marks: list[FileMark] = []
    for handler in handlers:
        path = getattr(handler, "baseFilename", None)
        if not isinstance(path, str):
            continue
        stream = getattr(handler, "stream", None)  # the stdlib's handlers: the file really written, even if moved
        try:
            st = os.fstat(stream.fileno()) if stream is not None and hasattr(stream, "fileno") else os.stat(path)
        except (OSError, ValueError):
            marks.append((path, 0, 0, -1))
        else:
            marks.append((path, st.st_dev, st.st_ino, st.st_size))
    return marks


def roll_back(marks: Sequence[FileMark]) -> tuple[list[str], list[str]]:
    """Cut each file back to its size before an unfinished batch; returns (paths cut, paths that could not be)."""
    cut: list[str] = []
    failed: list[str] = []
    for path, dev, ino, size in marks:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue  # nothing of the batch is there
        except OSError:
            failed.append(path)
            continue
        if size >= 0 and (st.st_dev, st.st_ino) != (dev, ino):
            failed.append(path)  # rotated or replaced since: cutting this file would cut someone else's lines
            continue
        keep = max(size, 0)
        if st.st_size <= keep:
            continue  # the kill came before anything reached this file
        try:
            os.truncate(path, keep)
        except OSError:
            failed.append(path)
        else:
            cut.append(path)
    return cut, failed


class Watermarks:
    """``(client id -> last written seq)`` and the batch in progress; journaled to ``path`` when one is given."""

    def __init__(self, path: str | None, max_clients: int, *, crash: CrashPoints | None = None) -> None:
        self.path = path
        self._crash = crash
        self.max_clients = max_clients
        self._last: collections.OrderedDict[str, int] = collections.OrderedDict()
        #: The files of a batch whose begin entry has no done entry: the hub was killed while writing it.
        self.dangling: list[FileMark] = []
        self._fd: int | None = None
        self._size = 0
        self._pack = frames.packer()  # the writer thread's (the constructor's before it starts)
        if path is not None:
            self._load(path)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._size = os.fstat(self._fd).st_size

    def _load(self, path: str) -> None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return
        pos = 0
        group: dict[tuple[str, int], bool] | None = None  # the open group's batches: done (True) or not yet
        while pos + _ENTRY_HEADER.size <= len(data):
            (length,) = _ENTRY_HEADER.unpack_from(data, pos)
            end = pos + _ENTRY_HEADER.size + length
            if end > len(data):
                break  # a torn last entry: a begin (nothing written yet) or a done (its batch is rolled back)
            try:
                entry = frames.unpack(data[pos + _ENTRY_HEADER.size : end])
            except (FrameError, TypeError, ValueError):
                break
            if isinstance(entry, list) and len(entry) in (2, 3, 4):
                cid, seq = entry[0], entry[1]
                if isinstance(cid, str) and isinstance(seq, int):
                    if len(entry) == 2:
                        group = self._group_done(group, cid, seq)
                    else:
                        self.dangling = _marks(entry[2])
                        group = _group(entry[3]) if len(entry) == 4 else None
            pos = end
        if pos != len(data):
            # Cut it off: the next entries must follow a whole one, or the load after the next restart stops here.
            log.warning("flocklog hub: removed %d torn bytes at the end of %s", len(data) - pos, path)
            os.truncate(path, pos)

    def _group_done(
        self, group: dict[tuple[str, int], bool] | None, cid: str, seq: int
    ) -> dict[tuple[str, int], bool] | None:
        """A done entry read back: a batch of its own, or one of the open group (remembered with the last one)."""
        if group is None or (cid, seq) not in group:
            self._remember(cid, seq)
            self.dangling = []
            return None
        group[(cid, seq)] = True
        if not all(group.values()):
            return group
        for done_cid, done_seq in group:
            self._remember(done_cid, done_seq)
        self.dangling = []
        return None

    def last(self, cid: str) -> int:
        return self._last.get(cid, -1)

    def _remember(self, cid: str, seq: int) -> None:
        self._last[cid] = seq
        self._last.move_to_end(cid)
        if len(self._last) > self.max_clients:
            self._last.popitem(last=False)

    def begin(self, batches: Sequence[tuple[str, int]], marks: list[FileMark]) -> None:
        """Before ``batches`` (``(cid, seq)``, one or a group) are written: the sizes their files are cut back to if
        they never finish."""
        if self._fd is not None and marks:
            cid, seq = batches[0]
            entry: list[object] = [cid, seq, [list(mark) for mark in marks]]
            if len(batches) > 1:
                entry.append([v for batch in batches for v in batch])
            self._append([self._pack(entry)], "mid_begin")

    def record(self, batches: Sequence[tuple[str, int]]) -> None:
        """``batches`` (``(cid, seq)``) are written: remembered, and on disk (one write) before the caller acks."""
        for cid, seq in batches:
            self._remember(cid, seq)
        written = self._fd is not None and self._append([self._pack(list(b)) for b in batches], "mid_watermark")
        if written and self._size > _COMPACT_AT:
            self._compact()

    def _append(self, bodies: list[bytes], crash_point: str) -> bool:
        assert self._fd is not None
        entry = _entries(bodies)
        if self._crash is not None and self._crash.due(crash_point):
            os.write(self._fd, entry[: len(entry) // 2])
            die()
        try:
            written = os.write(self._fd, entry)
            if written != len(entry):  # a full disk cut the entry short: no torn entry may precede later ones
                os.ftruncate(self._fd, self._size)
                raise OSError(f"short write ({written} of {len(entry)} bytes)")
        except OSError as exc:  # a full disk: the batch stays de-duplicated in memory, only a restart forgets it
            log.warning("flocklog hub: cannot write the de-duplication journal %s: %s", self.path, exc)
            return False
        self._size += len(entry)
        return True

    def settle(self) -> None:
        """After a roll-back: rewrite the journal without the dangling begin, so no later start repeats it."""
        self.dangling = []
        if self._fd is not None:
            self._compact()

    def _compact(self) -> None:
        assert self.path is not None and self._fd is not None
        tmp = f"{self.path}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                data = memoryview(_entries([self._pack([cid, seq]) for cid, seq in self._last.items()]))
                done = 0
                while done < len(data):
                    done += os.write(fd, data[done:])
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("flocklog hub: cannot compact %s: %s", self.path, exc)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return
        # The old descriptor is the replaced file's: entries appended there would be gone at the next start. If the
        # new one cannot be opened (no descriptors left), the journal is off, loudly, rather than kept as a closed
        # number that a later open() could hand to another file.
        old, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.close(old)
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            log.warning(
                "flocklog hub: cannot reopen the de-duplication journal %s: %s; batches are de-duplicated in "
                "memory only until the hub restarts (a crash then may write a resent batch twice)",
                self.path,
                exc,
            )
            return
        self._size = len(data)

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _entries(bodies: list[bytes]) -> bytes:
    """Journal entries as they go to disk: each body behind its ``uint32`` length."""
    return b"".join(_ENTRY_HEADER.pack(len(body)) + body for body in bodies)


def _group(raw: object) -> dict[tuple[str, int], bool] | None:
    """The batches a group's begin names (a flat ``[cid, seq, ...]``), none done yet; None if it is not one."""
    if not isinstance(raw, list) or len(raw) % 2:
        return None
    pairs = list(zip(raw[::2], raw[1::2], strict=True))
    if not all(isinstance(cid, str) and type(seq) is int for cid, seq in pairs):
        return None
    return dict.fromkeys(pairs, False)


def _marks(raw: object) -> list[FileMark]:
    marks: list[FileMark] = []
    if isinstance(raw, list):
        for item in raw:
            if (
                isinstance(item, list)
                and len(item) == 4
                and isinstance(item[0], str)
                and all(type(v) is int for v in item[1:])
            ):
                marks.append((item[0], item[1], item[2], item[3]))
    return marks
