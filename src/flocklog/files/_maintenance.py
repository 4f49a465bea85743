"""Scheduling of a set's maintenance: one background thread per handler and process runs compression,
retention and leftover cleaning after rotations, so the logging call never waits for them, and ``close()``
finishes (or hands over) what is pending.

An archive is compressed only after it has been quiet for :data:`GRACE` seconds, because a process that lost the
race to a rotation may still append one record to it. Failures are counted in ``errors`` and said on stderr once
each, never raised into the app.
"""

from __future__ import annotations

import os
import threading
import time

from flocklog.files._archives import SizeArchives, TimedArchives
from flocklog.files._lock import RotationLock

GRACE = 2.0  # seconds an archive must be untouched before it is compressed


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
