"""Retention for the execution-log table: delete by age and/or keep the newest N, in short batches.

Whole daily partitions older than the cutoff are dropped (PostgreSQL) instead of being deleted row by row.
"""

from __future__ import annotations

import abc
import contextlib
import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flocklog.errors import ConfigError, StoreError
from flocklog.store import DEFAULT_TABLE, resolve_table, sqlite_path

if TYPE_CHECKING:
    import psycopg

__all__ = ["DEFAULT_TABLE", "CleanupResult", "MethodResult", "cleanup", "dialect_of"]

META_TABLE = "flocklog_meta"
META_KEY = "last_cleanup"
_RANGE_BOUND = re.compile(r"FOR VALUES FROM \((.+)\) TO \((.+)\)$")
# How long a partition drop may wait for its lock: an ACCESS EXCLUSIVE request that queues behind a long query
# would block every writer queued behind it, so give up quickly, retry, and fall back to batched deletes.
_DROP_LOCK_TIMEOUT = "2s"
_DROP_ATTEMPTS = 3

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
    rows (by ``ts``, then ``id``). Pass ``days=None`` for a pure keep-N policy. Age deletion walks the table in
    ``window``-sized time slices, oldest first, and each slice in ``batch_size`` batches, each its own short
    transaction, so concurrent writers only ever wait for one batch. On a PostgreSQL table partitioned by ``ts``,
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
    if dialect == "postgresql":
        backend: _Backend = _PostgresBackend(url, table)
    else:
        backend = _SqliteBackend(url, table)
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
            backend.record(result)
        return result
    except _database_errors(dialect) as exc:
        raise StoreError(
            f"cleanup of {table!r} failed: {exc}. Batches committed before the failure stay deleted; "
            "run the cleanup again to finish."
        ) from exc
    finally:
        backend.close()


def _database_errors(dialect: str) -> tuple[type[BaseException], ...]:
    if dialect == "postgresql":
        import psycopg

        return (psycopg.Error,)
    return (sqlite3.Error,)


def _run(
    backend: _Backend,
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


def _count(backend: _Backend, cutoff: datetime | None, keep: int | None) -> tuple[list[MethodResult], list[str]]:
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


class _Backend(abc.ABC):
    """The dialect-specific queries; every delete batch commits on its own."""

    table: str

    @abc.abstractmethod
    def snapshot(self) -> contextlib.AbstractContextManager[None]:
        """One read snapshot for the dry run's counts, so they add up even while writers insert."""

    @abc.abstractmethod
    def check_table(self) -> None:
        raise NotImplementedError

    def droppable_partitions(self, cutoff: datetime) -> list[str]:
        """Partitions wholly before the cutoff; none unless the dialect partitions tables."""
        return []

    def drop_partition(self, name: str) -> int | None:
        raise StoreError(f"{type(self).__name__} has no partitions to drop ({name!r})")

    def count_relation(self, name: str) -> int:
        raise StoreError(f"{type(self).__name__} has no partitions to count ({name!r})")

    @abc.abstractmethod
    def count_older(self, cutoff: datetime) -> int:
        raise NotImplementedError

    @abc.abstractmethod
    def count_newer_or_equal(self, cutoff: datetime | None) -> int:
        raise NotImplementedError

    @abc.abstractmethod
    def delete_older(
        self, cutoff: datetime, batch_size: int, window: timedelta, hook: Callable[[int, int], None]
    ) -> tuple[int, int]:
        raise NotImplementedError

    @abc.abstractmethod
    def delete_beyond_newest(self, keep: int, batch_size: int, hook: Callable[[int, int], None]) -> tuple[int, int]:
        raise NotImplementedError

    @abc.abstractmethod
    def record(self, result: CleanupResult) -> None:
        raise NotImplementedError

    @abc.abstractmethod
    def close(self) -> None:
        raise NotImplementedError


def _windows(oldest: Callable[[], datetime | None], cutoff: datetime, window: timedelta) -> Iterator[datetime]:
    """Upper bounds of the time slices to delete, oldest first, the last being the cutoff.

    Each slice starts at the oldest row still older than the cutoff, so gaps of months cost one query, not one
    per empty window.
    """
    while (start := oldest()) is not None:
        yield min(start + window, cutoff)


class _PostgresBackend(_Backend):
    def __init__(self, url: str, table: str) -> None:
        import psycopg

        self.table = table
        try:
            self.conn: psycopg.Connection[Any] = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {_redact(url)} for cleanup: {exc}") from exc
        self.conn.execute("SET TIME ZONE 'UTC'")
        self._leaves: list[str] | None = None

    def _ident(self, name: str) -> Any:
        from psycopg import sql

        return sql.Identifier(name)

    def _scalar(self, query: Any, params: tuple[Any, ...] = ()) -> Any:
        row = self.conn.execute(query, params).fetchone()
        return row[0] if row else None

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        with self.conn.transaction():
            self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield

    def check_table(self) -> None:
        kind = self._scalar(
            "SELECT c.relkind::text FROM pg_class c WHERE c.oid = to_regclass(%s)", (self._quoted(self.table),)
        )
        if kind is None:
            raise ConfigError(f"table {self.table!r} does not exist in this database: create the schema first")
        self.partitioned = kind == "p"

    def _quoted(self, name: str) -> str:
        return '"' + name + '"'

    def leaves(self) -> list[str]:
        """Leaf relations holding the rows (the table itself unless it is partitioned)."""
        if not self.partitioned:
            return [self.table]
        if self._leaves is None:
            rows = self.conn.execute(
                "SELECT c.relname FROM pg_partition_tree(to_regclass(%s)) t JOIN pg_class c ON c.oid = t.relid"
                " WHERE t.isleaf AND c.relkind = 'r'",
                (self._quoted(self.table),),
            ).fetchall()
            self._leaves = [r[0] for r in rows]
        return list(self._leaves)

    def droppable_partitions(self, cutoff: datetime) -> list[str]:
        import psycopg

        if not self.partitioned:
            return []
        rows = self.conn.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s) AND c.relkind = 'r'",
            (self._quoted(self.table),),
        ).fetchall()
        result: list[tuple[datetime, str]] = []
        for name, bound in rows:
            match = _RANGE_BOUND.match(bound or "")
            if not match:
                continue  # the DEFAULT partition (or not a range): only batch deletes may touch it
            literal = re.fullmatch(r"'([^']*)'", match.group(2).strip())
            if not literal:
                continue  # MAXVALUE or a multi-column bound: leave it to batch deletes
            try:
                with self.conn.transaction():  # a savepoint inside the dry run's snapshot
                    upper = self._scalar("SELECT %s::timestamptz", (literal.group(1),))
            except psycopg.Error:
                continue
            if isinstance(upper, datetime) and upper <= cutoff:
                result.append((upper, name))
        return [name for _, name in sorted(result)]

    def drop_partition(self, name: str) -> int | None:
        import psycopg
        from psycopg import sql

        for _ in range(_DROP_ATTEMPTS):
            try:
                with self.conn.transaction():
                    self.conn.execute(f"SET LOCAL lock_timeout = '{_DROP_LOCK_TIMEOUT}'")
                    self.conn.execute(
                        sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(self._ident(self.table), self._ident(name))
                    )
                    rows = int(self._scalar(sql.SQL("SELECT count(*) FROM {}").format(self._ident(name))))
                    self.conn.execute(sql.SQL("DROP TABLE {}").format(self._ident(name)))
                self._leaves = None
                return rows
            except psycopg.errors.LockNotAvailable:
                time.sleep(0.5)
        return None  # still busy: its rows are removed by the batched delete that follows

    def count_relation(self, name: str) -> int:
        from psycopg import sql

        return int(self._scalar(sql.SQL("SELECT count(*) FROM {}").format(self._ident(name))))

    def count_older(self, cutoff: datetime) -> int:
        from psycopg import sql

        query = sql.SQL("SELECT count(*) FROM {} WHERE ts < %s").format(self._ident(self.table))
        return int(self._scalar(query, (cutoff,)))

    def count_newer_or_equal(self, cutoff: datetime | None) -> int:
        from psycopg import sql

        if cutoff is None:
            return int(self._scalar(sql.SQL("SELECT count(*) FROM {}").format(self._ident(self.table))))
        query = sql.SQL("SELECT count(*) FROM {} WHERE ts >= %s").format(self._ident(self.table))
        return int(self._scalar(query, (cutoff,)))

    def _delete_batches(self, leaf: str, where: Any, params: tuple[Any, ...], batch_size: int) -> Iterator[int]:
        from psycopg import sql

        # ctid = ANY(ARRAY(...)) is planned as a TID scan: each batch touches only the rows it deletes. The ctids
        # are taken per leaf, since a ctid is only unique within one partition.
        query = sql.SQL("DELETE FROM {t} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {t} WHERE {w} LIMIT {n}))").format(
            t=self._ident(leaf), w=where, n=sql.Literal(batch_size)
        )
        while True:
            deleted = self.conn.execute(query, params).rowcount
            if deleted <= 0:
                return
            yield deleted
            if deleted < batch_size:
                return

    def delete_older(
        self, cutoff: datetime, batch_size: int, window: timedelta, hook: Callable[[int, int], None]
    ) -> tuple[int, int]:
        from psycopg import sql

        total = batches = 0
        for leaf in self.leaves():
            query = sql.SQL("SELECT min(ts) FROM {} WHERE ts < %s").format(self._ident(leaf))

            def oldest(query: Any = query) -> datetime | None:
                value: datetime | None = self._scalar(query, (cutoff,))
                return value

            for bound in _windows(oldest, cutoff, window):
                for deleted in self._delete_batches(leaf, sql.SQL("ts < %s"), (bound,), batch_size):
                    total += deleted
                    batches += 1
                    hook(batches, deleted)
        return total, batches

    def delete_beyond_newest(self, keep: int, batch_size: int, hook: Callable[[int, int], None]) -> tuple[int, int]:
        from psycopg import sql

        if keep == 0:
            where: Any = sql.SQL("TRUE")
            params: tuple[Any, ...] = ()
        else:
            row = self.conn.execute(
                sql.SQL("SELECT ts, id FROM {} ORDER BY ts DESC, id DESC OFFSET %s LIMIT 1").format(
                    self._ident(self.table)
                ),
                (keep - 1,),
            ).fetchone()
            if row is None:
                return 0, 0
            where, params = sql.SQL("(ts, id) < (%s, %s)"), (row[0], row[1])
        total = batches = 0
        for leaf in self.leaves():
            for deleted in self._delete_batches(leaf, where, params, batch_size):
                total += deleted
                batches += 1
                hook(batches, deleted)
        return total, batches

    def record(self, result: CleanupResult) -> None:
        import psycopg

        # Two sessions creating it at once make one fail (IF NOT EXISTS is not atomic in PostgreSQL): it exists now.
        with contextlib.suppress(psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
            self.conn.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key text PRIMARY KEY, value text NOT NULL)")
        self.conn.execute(
            f"INSERT INTO {META_TABLE} (key, value) VALUES (%s, %s)"
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (META_KEY, _summary(result)),
        )

    def close(self) -> None:
        self.conn.close()


class _SqliteBackend(_Backend):
    def __init__(self, url: str, table: str) -> None:
        self.table = table
        path = sqlite_path(url)
        if not path or not Path(path).exists():
            raise ConfigError(f"SQLite store {path!r} does not exist: check the URL or create the schema first")
        # isolation_level=None: every statement is its own transaction, so each batch commits at once.
        self.conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        self.conn.execute("PRAGMA busy_timeout = 30000")

    def _scalar(self, query: str, params: tuple[Any, ...] = ()) -> Any:
        row = self.conn.execute(query, params).fetchone()
        return row[0] if row else None

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        # In WAL mode a read transaction sees one snapshot from its first read to its end, without blocking writers.
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")

    def check_table(self) -> None:
        found = self._scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", (self.table,))
        if found is None:
            raise ConfigError(f"table {self.table!r} does not exist in this database: create the schema first")

    def count_older(self, cutoff: datetime) -> int:
        return int(self._scalar(f'SELECT count(*) FROM "{self.table}" WHERE ts < ?', (cutoff.timestamp(),)))

    def count_newer_or_equal(self, cutoff: datetime | None) -> int:
        if cutoff is None:
            return int(self._scalar(f'SELECT count(*) FROM "{self.table}"'))
        return int(self._scalar(f'SELECT count(*) FROM "{self.table}" WHERE ts >= ?', (cutoff.timestamp(),)))

    def _delete_batches(self, where: str, params: tuple[Any, ...], batch_size: int) -> Iterator[int]:
        query = (
            f'DELETE FROM "{self.table}" WHERE rowid IN '
            f'(SELECT rowid FROM "{self.table}" WHERE {where} LIMIT {int(batch_size)})'
        )
        while True:
            deleted = self.conn.execute(query, params).rowcount
            if deleted <= 0:
                return
            yield deleted
            if deleted < batch_size:
                return

    def delete_older(
        self, cutoff: datetime, batch_size: int, window: timedelta, hook: Callable[[int, int], None]
    ) -> tuple[int, int]:
        def oldest() -> datetime | None:
            ts = self._scalar(f'SELECT min(ts) FROM "{self.table}" WHERE ts < ?', (cutoff.timestamp(),))
            return None if ts is None else datetime.fromtimestamp(float(ts), timezone.utc)

        total = batches = 0
        for bound in _windows(oldest, cutoff, window):
            for deleted in self._delete_batches("ts < ?", (bound.timestamp(),), batch_size):
                total += deleted
                batches += 1
                hook(batches, deleted)
        return total, batches

    def delete_beyond_newest(self, keep: int, batch_size: int, hook: Callable[[int, int], None]) -> tuple[int, int]:
        if keep == 0:
            where = "1"
            params: tuple[Any, ...] = ()
        else:
            row = self.conn.execute(
                f'SELECT ts, id FROM "{self.table}" ORDER BY ts DESC, id DESC LIMIT 1 OFFSET ?', (keep - 1,)
            ).fetchone()
            if row is None:
                return 0, 0
            where, params = "(ts < ? OR (ts = ? AND id < ?))", (row[0], row[0], row[1])
        total = batches = 0
        for deleted in self._delete_batches(where, params, batch_size):
            total += deleted
            batches += 1
            hook(batches, deleted)
        return total, batches

    def record(self, result: CleanupResult) -> None:
        self.conn.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self.conn.execute(
            f"INSERT INTO {META_TABLE} (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (META_KEY, _summary(result)),
        )

    def close(self) -> None:
        self.conn.close()


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)
