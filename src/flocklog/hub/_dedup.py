"""The hub's de-duplication watermark: the last batch seq written per client, kept in memory and, optionally, on disk.

Why on disk: a hub killed between writing a batch and acking it gets the batch again from the client after a
restart; with the watermark only in memory it wrote that batch twice. The file is an append-only log of
``uint32 length + msgpack [cid, seq]`` entries, one ``os.write`` per batch, made after the batch was written and
before it is acked, so a SIGKILL at any moment leaves either the batch unwritten (the client resends it) or its
entry present (the resend is skipped). The page cache survives a killed process; a power loss may lose the last
entries (no fsync per batch: that would cost more than the write itself). A torn last entry is ignored on load,
and the log is compacted (temporary file, then rename) when it grows past a few MiB.

Shared state: every field is owned by the hub's writer thread; nothing else touches it (no lock).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import struct

from flocklog.errors import FrameError
from flocklog.hub import frames

log = logging.getLogger("flocklog.hub")

_ENTRY_HEADER = struct.Struct(">I")
_COMPACT_AT = 4 * 1024 * 1024


class Watermarks:
    """``(client id -> last written seq)``; persisted to ``path`` when one is given."""

    def __init__(self, path: str | None, max_clients: int) -> None:
        self.path = path
        self.max_clients = max_clients
        self._last: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._fd: int | None = None
        self._size = 0
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
        while pos + _ENTRY_HEADER.size <= len(data):
            (length,) = _ENTRY_HEADER.unpack_from(data, pos)
            end = pos + _ENTRY_HEADER.size + length
            if end > len(data):
                break  # a torn last entry: the batch it belonged to was never acked
            try:
                cid, seq = frames.unpack(data[pos + _ENTRY_HEADER.size : end])
            except (FrameError, TypeError, ValueError):
                break
            if isinstance(cid, str) and isinstance(seq, int):
                self._remember(cid, seq)
            pos = end
        if pos != len(data):
            log.warning("flocklog hub: ignored %d torn bytes at the end of %s", len(data) - pos, path)

    def last(self, cid: str) -> int:
        return self._last.get(cid, -1)

    def _remember(self, cid: str, seq: int) -> None:
        self._last[cid] = seq
        self._last.move_to_end(cid)
        if len(self._last) > self.max_clients:
            self._last.popitem(last=False)

    def record(self, cid: str, seq: int) -> None:
        """Remember that batch ``seq`` of ``cid`` is written; on disk before the caller acks it."""
        self._remember(cid, seq)
        if self._fd is None:
            return
        body = frames.pack([cid, seq])
        entry = _ENTRY_HEADER.pack(len(body)) + body
        try:
            written = os.write(self._fd, entry)
            if written != len(entry):  # a full disk cut the entry short: no torn entry may precede later ones
                os.ftruncate(self._fd, self._size)
                raise OSError(f"short write ({written} of {len(entry)} bytes)")
        except OSError as exc:  # a full disk: the batch stays de-duplicated in memory, only a restart forgets it
            log.warning("flocklog hub: cannot record the de-duplication watermark in %s: %s", self.path, exc)
            return
        self._size += len(entry)
        if self._size > _COMPACT_AT:
            self._compact()

    def _compact(self) -> None:
        assert self.path is not None and self._fd is not None
        tmp = f"{self.path}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                chunks = []
                for cid, seq in self._last.items():
                    body = frames.pack([cid, seq])
                    chunks.append(_ENTRY_HEADER.pack(len(body)) + body)
                data = b"".join(chunks)
                os.write(fd, data)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("flocklog hub: cannot compact %s: %s", self.path, exc)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = len(data)

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
