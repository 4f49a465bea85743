"""A sink's disk spool: segments of JSON lines, one delivery each, oldest first, in a directory held by ``flock``.

The sink sender spools a batch it could not deliver and retries segments from here (see :mod:`._base`). Shared
state: every field is guarded by ``_Spool.lock`` (emit when the queue is full, the sender, close).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("flocklog.hub.sinks")


def default_spool_dir(kind: str, name: str | None) -> str:
    """A stable per-user directory, so a restarted hub finds and resends what its predecessor spooled."""
    base = os.path.join(tempfile.gettempdir(), f"flocklog-sinks-{os.getuid()}")
    return os.path.join(base, f"{kind}-{name}" if name else kind)


class _Spool:
    """Segments of JSON lines on disk, one delivery each, taken oldest first; the directory is ours by ``flock``.

    A second sink pointed at the same directory (another hub) cannot take the lock and spools into a
    subdirectory named after its pid instead, so two senders never deliver the same segment.
    """

    def __init__(self, directory: str, segment_records: int) -> None:
        self.base = directory
        self.directory = directory
        self.segment_records = segment_records
        self.lock = threading.Lock()
        self.records = 0  # records on disk, not yet delivered
        self._opened = False
        self._lock_fd: int | None = None
        self._current: str | None = None  # the segment being appended to
        self._current_count = 0
        self._seq = 0

    def _open(self) -> None:
        """Create and lock the directory on first use (never at import or construction) and count leftovers."""
        if self._opened:
            return
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(self.directory, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            self.directory = os.path.join(self.base, f"pid-{os.getpid()}")
            log.warning(
                "flocklog sink: spool %s is in use by another process; spooling to %s", self.base, self.directory
            )
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            fd = os.open(os.path.join(self.directory, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._lock_fd = fd
        self.records = 0
        for name in os.listdir(self.directory):
            if name.endswith(".jsonl"):
                with contextlib.suppress(OSError), open(os.path.join(self.directory, name), "rb") as fh:
                    self.records += sum(1 for _ in fh)
        self._opened = True

    def has_data(self) -> bool:
        """Whether anything waits on disk (opening the directory lazily, to find a predecessor's leftovers)."""
        with self.lock:
            if not self._opened:
                if not os.path.isdir(self.base):
                    return False
                self._open()
            return self.records > 0

    def append(self, items: Sequence[Any]) -> None:
        """Append items (JSON-safe) to the current segment; a new segment every ``segment_records`` records."""
        with self.lock:
            self._open()
            data = "".join(json.dumps(item, separators=(",", ":")) + "\n" for item in items).encode("utf-8")
            if self._current is None or self._current_count >= self.segment_records:
                self._seq += 1
                self._current = os.path.join(
                    self.directory, f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}.jsonl"
                )
                self._current_count = 0
            fd = os.open(self._current, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            self._current_count += len(items)
            self.records += len(items)

    def take(self) -> tuple[str, list[Any], int] | None:
        """The oldest segment: its path, the items that parse, and how many lines were corrupt (a torn tail)."""
        with self.lock:
            if not self._opened or self.records <= 0:
                return None
            names = sorted(n for n in os.listdir(self.directory) if n.endswith(".jsonl"))
            if not names:
                self.records = 0
                return None
            path = os.path.join(self.directory, names[0])
            if path == self._current:
                self._current = None  # sealed: new items go to a new segment
            items: list[Any] = []
            corrupt = 0
            with open(path, "rb") as fh:
                for line in fh:
                    try:
                        items.append(json.loads(line))
                    except ValueError:
                        corrupt += 1
            return path, items, corrupt

    def done(self, path: str, n: int) -> None:
        with self.lock:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            self.records = max(0, self.records - n)

    def release(self) -> None:
        """Unlock the directory (the sink is closed): a successor in this or another process may take it."""
        with self.lock:
            if self._lock_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._lock_fd)
                self._lock_fd = None
            self._opened = False
            self._current = None

    def forget_after_fork(self) -> None:
        """A forked child must not use the parent's locked directory: it opens its own on first use."""
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)  # the parent's descriptor keeps the lock
        self.__init__(self.base, self.segment_records)  # type: ignore[misc]  # re-initialise in place after fork
