"""Rate-limited warnings on the ``flocklog`` logger: how the pipeline makes a drop or a failure visible.

Never through the pipeline itself: the records carry :data:`INTERNAL`, which
:class:`~flocklog.pipeline.handler.ExecutionLogHandler` skips (a pipeline reporting its own trouble through
itself would loop, or lose the report with the records).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time

__all__ = ["INTERNAL", "Reporter"]

#: Records of the ``flocklog`` logger that carry this attribute are flocklog's own reports.
INTERNAL = "flocklog_internal"
_log = logging.getLogger("flocklog")


class Reporter:
    """Rate-limited warnings on the ``flocklog`` logger: the first of each kind at once, then at most one per
    ``interval`` seconds with the count since the previous one; :meth:`flush` says what is left (at close)."""

    def __init__(self, name: str, interval: float = 10.0) -> None:
        self.name = name
        self.interval = interval
        self._lock = threading.Lock()
        self._pending: collections.Counter[str] = collections.Counter()
        self._detail: dict[str, str] = {}
        self._last: dict[str, float] = {}

    def note(self, kind: str, count: int, detail: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._pending[kind] += count
            self._detail[kind] = detail
            if now - self._last.get(kind, -1e18) < self.interval:
                return
            self._last[kind] = now
            count = self._pending.pop(kind)
        self._emit(kind, count, detail)

    def flush(self) -> None:
        with self._lock:
            pending = [(kind, count, self._detail[kind]) for kind, count in self._pending.items() if count]
            self._pending.clear()
        for kind, count, detail in pending:
            self._emit(kind, count, detail)

    def _emit(self, kind: str, count: int, detail: str) -> None:
        # A broken handler of the application's must not take the pipeline down.
        with contextlib.suppress(Exception):
            _log.warning(
                "execution log %r: %s (%s: %d since the last warning; totals in stats())",
                self.name,
                detail,
                kind,
                count,
                extra={INTERNAL: True},
            )
