"""The retention backend contract each dialect module implements, and the keyset walk of the age delete.

The SQL itself lives in the dialect modules (``_postgres.py``, ``_sqlite.py``); this module holds what is the
same for both, so :mod:`flocklog.store.cleanup` only orchestrates.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from flocklog.errors import StoreError

META_TABLE = "flocklog_meta"
META_KEY = "last_cleanup"

Hook = Callable[[int, int], None]


class RetentionBackend(abc.ABC):
    """The dialect-specific retention queries; every delete batch commits on its own."""

    table: str

    @abc.abstractmethod
    def snapshot(self) -> contextlib.AbstractContextManager[None]:
        """One read snapshot for the dry run's counts, so they add up even while writers insert."""

    @abc.abstractmethod
    def check_table(self) -> None:
        """Raise ConfigError unless the table exists (looked up with the same quoting the store creates it with)."""

    def leaves(self) -> list[str]:
        """Relations holding the rows: the table itself unless it is partitioned."""
        return [self.table]

    def droppable_partitions(self, cutoff: datetime) -> list[str]:
        """Partitions wholly before the cutoff; none unless the dialect partitions tables."""
        return []

    def drop_partition(self, name: str) -> int | None:
        raise StoreError(f"{type(self).__name__} has no partitions to drop ({name!r})")

    def count_relation(self, name: str) -> int:
        raise StoreError(f"{type(self).__name__} has no partitions to count ({name!r})")

    @abc.abstractmethod
    def count_older(self, cutoff: datetime) -> int: ...

    @abc.abstractmethod
    def count_newer_or_equal(self, cutoff: datetime | None) -> int: ...

    # Bounds of the keyset walk are the column's own values (timestamptz, or SQLite's REAL seconds), never
    # converted in between: a float rounded to a datetime's microsecond could step over a row.

    @abc.abstractmethod
    def ts_value(self, moment: datetime) -> Any:
        """``moment`` as the ts column stores it."""

    @abc.abstractmethod
    def ts_plus(self, value: Any, span: timedelta) -> Any:
        """A ts column value plus ``span``."""

    @abc.abstractmethod
    def oldest_from(self, leaf: str, lower: Any, cutoff: Any) -> Any:
        """``min(ts)`` of ``leaf`` in ``[lower, cutoff)`` (``lower`` None: from the start), or None."""

    @abc.abstractmethod
    def delete_oldest(self, leaf: str, lower: Any, upper: Any, batch_size: int) -> tuple[int, Any]:
        """Delete the ``batch_size`` oldest rows of ``leaf`` in ``[lower, upper)`` (ORDER BY ts on the ts index);
        return how many went and the newest ``ts`` among them, the next batch's lower bound."""

    @abc.abstractmethod
    def delete_beyond_newest(self, keep: int, batch_size: int, hook: Hook) -> tuple[int, int]: ...

    @abc.abstractmethod
    def record(self, summary: str) -> None:
        """Store the run's summary (JSON) under ``last_cleanup`` in ``flocklog_meta``."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def delete_older(self, cutoff: datetime, batch_size: int, window: timedelta, hook: Hook) -> tuple[int, int]:
        """Delete every row older than ``cutoff``, oldest first, in batches of ``batch_size``.

        Keyset batches: each batch starts where the previous one ended (``ts >= last deleted ts``), so it never
        re-walks the index entries of rows already deleted (still there until VACUUM): the last batch costs what
        the first did. ``window`` caps the time span one slice covers; gaps cost one index probe.
        """
        total = batches = 0
        end = self.ts_value(cutoff)
        for leaf in self.leaves():
            lower: Any = None
            while (start := self.oldest_from(leaf, lower, end)) is not None:
                lower, upper = start, min(self.ts_plus(start, window), end)
                while True:
                    deleted, last = self.delete_oldest(leaf, lower, upper, batch_size)
                    if deleted <= 0 or last is None:
                        break
                    total += deleted
                    batches += 1
                    hook(batches, deleted)
                    lower = last
                    if deleted < batch_size:
                        break
                lower = upper
        return total, batches


def batches(run: Callable[[], int], batch_size: int) -> Iterator[int]:
    """Run one delete batch after another until one removes fewer than ``batch_size`` rows."""
    while True:
        deleted = run()
        if deleted <= 0:
            return
        yield deleted
        if deleted < batch_size:
            return
