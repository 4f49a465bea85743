"""Retention for the execution-log table: delete by age and/or keep the newest N, in short batches.

This module orchestrates; each dialect's queries live in its store module. Whole daily partitions older than the
cutoff are dropped (PostgreSQL) instead of being deleted row by row.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from flocklog.errors import ConfigError, StoreError
from flocklog.store import DEFAULT_TABLE, resolve_table
from flocklog.store._retention import META_KEY, META_TABLE, RetentionBackend

__all__ = ["DEFAULT_TABLE", "META_KEY", "META_TABLE", "CleanupResult", "MethodResult", "cleanup", "dialect_of"]

BatchHook = Callable[[str, int, int], None]
"""Called after every committed batch or dropped partition with (method, number within the method, rows)."""


@dataclass(frozen=True)
class MethodResult:
    """What one retention method matched and removed; ``batches`` counts separate transactions."""

    method: str  # "partition_drop" | "age" | "keep"
    matched: int
    deleted: int
    batches: int


@dataclass(frozen=True)
class CleanupResult:
    """The outcome of one :func:`cleanup` run.

    In a dry run ``matched`` is exactly what would go and ``partitions_dropped`` names the partitions that would be
    dropped; in a real run ``matched == deleted`` (rows counted as their batches commit, not in a separate scan).
    """

    table: str
    dialect: str
    dry_run: bool
    cutoff: datetime | None
    keep: int | None
    matched: int
    deleted: int
    batches: int
    partitions_dropped: tuple[str, ...]
    methods: tuple[MethodResult, ...]
    seconds: float
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def method(self, name: str) -> MethodResult | None:
        return next((m for m in self.methods if m.method == name), None)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cutoff"] = self.cutoff.isoformat() if self.cutoff else None
        data["started_at"] = self.started_at.isoformat()
        data["partitions_dropped"] = list(self.partitions_dropped)
        return data


def dialect_of(url: str) -> str:
    """``"postgresql"`` or ``"sqlite"`` for a store URL; anything else is a configuration error."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql"
    if url.startswith("sqlite:///"):
        return "sqlite"
    raise ConfigError(f"unsupported store URL {url!r}: use postgresql://user@host:port/db or sqlite:///path/to/file.db")


def _validate(days: float | None, keep: int | None, batch_size: int, window: timedelta) -> None:
    if days is None and keep is None:
        raise ConfigError("cleanup needs days= (delete rows older than N days) or keep= (keep the newest N rows)")
    if days is not None and (not isinstance(days, (int, float)) or isinstance(days, bool) or days < 0):
        raise ConfigError(f"days must be a number >= 0, got {days!r}")
    if keep is not None and (not isinstance(keep, int) or isinstance(keep, bool) or keep < 0):
        raise ConfigError(f"keep must be an integer >= 0 (rows to keep), got {keep!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if window <= timedelta(0):
        raise ConfigError(f"window must be a positive timedelta, got {window!r}")


def cleanup(
    url: str,
    *,
    days: float | None = 365,
    keep: int | None = None,
    dry_run: bool = False,
    batch_size: int = 5000,
    window: timedelta = timedelta(days=1),
    table: str | None = None,
    now: datetime | None = None,
    on_batch: BatchHook | None = None,
) -> CleanupResult:
    """Remove old execution-log rows without holding a lock for the whole run.

    A row goes when EITHER rule says so: it is older than ``now - days``, or it is not among the ``keep`` newest
    rows (by ``ts``, then ``id``). Pass ``days=None`` for a pure keep-N policy. Age deletion walks the ts index
    oldest first in keyset batches of ``batch_size`` (each starts where the last ended, so batches do not slow
    down as the run goes), slices at most ``window`` wide, each batch its own short transaction, so concurrent
    writers only ever wait for one batch. On a PostgreSQL table partitioned by ``ts``,
    partitions lying wholly before the cutoff are detached and dropped (no per-row WAL); the partition straddling
    the cutoff is batch-deleted. Rows that arrive during the run are newer than the keep boundary (taken once
    at the start of the keep phase), so keep-N never removes them: the table may end slightly above N.

    ``dry_run`` counts exactly what would go and writes nothing. A real run records ``last_cleanup`` in
    ``flocklog_meta``. ``on_batch`` is called after each committed batch or dropped partition (progress, tests).
    """
    _validate(days, keep, batch_size, window)
    table = resolve_table(table)
    dialect = dialect_of(url)
    now = now or datetime.now(timezone.utc)
    if now.tzinfo is None:
        raise ConfigError("now must be timezone-aware (UTC), e.g. datetime.now(timezone.utc)")
    cutoff = now - timedelta(days=days) if days is not None else None
    started = time.monotonic()
    started_at = datetime.now(timezone.utc)
    backend = _backend(dialect, url, table)
    try:
        backend.check_table()
        methods, dropped = _run(backend, cutoff, keep, dry_run, batch_size, window, on_batch)
        result = CleanupResult(
            table=table,
            dialect=dialect,
            dry_run=dry_run,
            cutoff=cutoff,
            keep=keep,
            matched=sum(m.matched for m in methods),
            deleted=sum(m.deleted for m in methods),
            batches=sum(m.batches for m in methods),
            partitions_dropped=tuple(dropped),
            methods=tuple(methods),
            seconds=time.monotonic() - started,
            started_at=started_at,
        )
        if not dry_run:
            backend.record(_summary(result))
        return result
    except _database_errors(dialect) as exc:
        raise StoreError(
            f"cleanup of {table!r} failed: {exc}. Batches committed before the failure stay deleted; "
            "run the cleanup again to finish."
        ) from exc
    finally:
        backend.close()


def _backend(dialect: str, url: str, table: str) -> RetentionBackend:
    """The dialect module's retention queries (each dialect's SQL lives in its own module)."""
    if dialect == "postgresql":
        from flocklog.store._postgres import PostgresRetention

        return PostgresRetention(url, table)
    from flocklog.store._sqlite import SqliteRetention

    return SqliteRetention(url, table)


def _database_errors(dialect: str) -> tuple[type[BaseException], ...]:
    if dialect == "postgresql":
        import psycopg

        return (psycopg.Error,)
    return (sqlite3.Error,)


def _run(
    backend: RetentionBackend,
    cutoff: datetime | None,
    keep: int | None,
    dry_run: bool,
    batch_size: int,
    window: timedelta,
    on_batch: BatchHook | None,
) -> tuple[list[MethodResult], list[str]]:
    methods: list[MethodResult] = []
    dropped: list[str] = []
    if dry_run:
        with backend.snapshot():
            return _count(backend, cutoff, keep)
    if cutoff is not None:
        dropped_rows = 0
        for partition in backend.droppable_partitions(cutoff):
            rows = backend.drop_partition(partition)
            if rows is not None:
                dropped_rows += rows
                dropped.append(partition)
                _hook(on_batch, "partition_drop")(len(dropped), rows)
        if dropped:
            methods.append(MethodResult("partition_drop", dropped_rows, dropped_rows, len(dropped)))
        deleted, batches = backend.delete_older(cutoff, batch_size, window, _hook(on_batch, "age"))
        methods.append(MethodResult("age", deleted, deleted, batches))
    if keep is not None:
        deleted, batches = backend.delete_beyond_newest(keep, batch_size, _hook(on_batch, "keep"))
        methods.append(MethodResult("keep", deleted, deleted, batches))
    return methods, dropped


def _count(
    backend: RetentionBackend, cutoff: datetime | None, keep: int | None
) -> tuple[list[MethodResult], list[str]]:
    """What a real run would remove: the union of both rules, from one snapshot."""
    methods: list[MethodResult] = []
    droppable: list[str] = []
    if cutoff is not None:
        droppable = backend.droppable_partitions(cutoff)
        in_parts = sum(backend.count_relation(p) for p in droppable)
        if droppable:
            methods.append(MethodResult("partition_drop", in_parts, 0, 0))
        methods.append(MethodResult("age", backend.count_older(cutoff) - in_parts, 0, 0))
    if keep is not None:
        # The keep-N newest rows all lie at or after the cutoff when there are that many, so the rows only keep-N
        # removes are the younger ones beyond N.
        remaining = backend.count_newer_or_equal(cutoff)
        methods.append(MethodResult("keep", max(0, remaining - keep), 0, 0))
    return methods, droppable


def _hook(on_batch: BatchHook | None, method: str) -> Callable[[int, int], None]:
    def call(batch: int, rows: int) -> None:
        if on_batch is not None:
            on_batch(method, batch, rows)

    return call


def _summary(result: CleanupResult) -> str:
    return json.dumps({"time": datetime.now(timezone.utc).isoformat(), **result.to_dict()}, sort_keys=True)
