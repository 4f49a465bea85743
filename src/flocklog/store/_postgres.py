"""All of flocklog's PostgreSQL SQL: the store (psycopg 3, a small pool per process) and its retention queries.

Small batches go in as one ``INSERT ... SELECT FROM unnest(arrays) ON CONFLICT DO NOTHING`` (one round trip, exact
row count); large ones are COPYed into a temp table first (DESIGN.md: ~68k rows/s at batch 1000). A batch that
arrives as the Celery task's rows can go in as those rows (:meth:`PostgresStore.write_wire_rows`), with
no record objects built. Every identifier goes through :func:`quote`, so a mixed-case table name is created,
written and cleaned as spelled.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from flocklog.errors import ConfigError, StoreError
from flocklog.store import RecordRefused, redact
from flocklog.store._retention import META_KEY, META_TABLE, Hook, RetentionBackend, batches

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

    from flocklog.record import ExecutionRecord

COPY_THRESHOLD = 500
_WIRE_COLUMNS = "id, d, level, logger, message, fields, host, pid"
_WIRE_TABLE = "(id uuid, d float8, level smallint, logger text, message text, fields jsonb, host text, pid integer)"
_COLUMNS = "id, ts, level, logger, message, fields, host, pid"
_RANGE_BOUND = re.compile(r"FOR VALUES FROM \((.+)\) TO \((.+)\)$")
# How long a partition drop may wait for its lock: an ACCESS EXCLUSIVE request that queues behind a long query
# would block every writer queued behind it, so give up quickly, retry, and fall back to batched deletes.
_DROP_LOCK_TIMEOUT = "2s"
_DROP_ATTEMPTS = 3


# The timestamp of a wire row's float seconds ``d`` exactly as datetime.fromtimestamp(d, utc) makes it (CPython's
# _PyTime_DoubleToDenominator): the whole seconds, plus the fraction times 1e6 rounded half to even (round() on
# float8 is rint()), in float8 arithmetic that is exact here, added as whole microseconds. to_timestamp(d) alone
# rounds (d - 946684800) * 1e6 instead, which differs at half-microsecond ties, and the key (id, ts) must match what
# write_batch stores for the same record (a spool replay --to direct would otherwise add a duplicate).
_WIRE_TS = "to_timestamp(trunc(d)) + round((d - trunc(d)) * 1000000::float8) * interval '1 microsecond'"


def _copy_then_insert(
    cur: Any, table: str, temp: str, definition: str, columns: str, rows: Sequence[Any], select: str
) -> int:
    """COPY ``rows`` (``columns``) into the session's temp table ``temp`` (``definition``; made once, emptied at
    each commit), then move them into ``table`` with ``ON CONFLICT (id, ts) DO NOTHING``: the rows really added.
    One COPY is the fast way in; the temp table is what lets the conflict rule apply to it."""
    cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {temp} {definition} ON COMMIT DELETE ROWS")
    with cur.copy(f"COPY {temp} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    cur.execute(f"INSERT INTO {table} ({_COLUMNS}) SELECT {select} FROM {temp} ON CONFLICT (id, ts) DO NOTHING")
    return int(cur.rowcount)


def quote(name: str) -> str:
    """``name`` as a PostgreSQL identifier, case kept: the one quoting rule for every statement here."""
    return '"' + name.replace('"', '""') + '"'


def _meta_ddl() -> str:
    return f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key text PRIMARY KEY, value text NOT NULL)"


class PostgresStore:
    dialect = "postgresql"

    def __init__(self, url: str, table: str, *, max_connections: int = 4, connect_timeout: float = 5.0) -> None:
        self.url = url
        self.table = table
        self._t = quote(table)
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self._pool: ConnectionPool | None = None
        self._pid = -1
        self._partitioned: bool | None = None
        self._partitions: set[str] = set()

    def _get_pool(self) -> ConnectionPool:
        if self._pool is None or self._pid != os.getpid():
            # After fork the inherited pool's sockets belong to the parent: never close them here, start afresh.
            from psycopg_pool import ConnectionPool

            self._pool = ConnectionPool(
                self.url,
                min_size=1,
                max_size=self.max_connections,
                kwargs={"connect_timeout": int(self.connect_timeout)},
                timeout=self.connect_timeout,
                open=True,
            )
            self._pid = os.getpid()
            self._partitions = set()
        return self._pool

    def _run(self, work: Any) -> Any:
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            with self._get_pool().connection() as conn:
                return work(conn)
        except (psycopg.DataError, psycopg.IntegrityError, UnicodeError) as exc:
            # The rows themselves: a NUL byte, a lone surrogate, a value out of range. Retrying cannot help.
            raise RecordRefused(f"PostgreSQL refused the data ({type(exc).__name__}: {exc})") from exc
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
            raise StoreError(f"PostgreSQL is unreachable or failed ({type(exc).__name__}: {exc})") from exc
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL refused the write ({type(exc).__name__}: {exc})") from exc

    def create_schema(self, partitioned: bool = False) -> None:
        t = self._t
        partition = " PARTITION BY RANGE (ts)" if partitioned else ""

        def work(conn: Any) -> None:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {t} (id uuid NOT NULL, ts timestamptz NOT NULL, level smallint NOT NULL,"
                " logger text NOT NULL DEFAULT '', message text NOT NULL, fields jsonb NOT NULL DEFAULT '{}'::jsonb,"
                " host text NOT NULL DEFAULT '', pid integer NOT NULL DEFAULT 0,"
                f" inserted_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (id, ts)){partition}"
            )
            # The index the keyset age delete walks (the primary key leads with id, so it cannot serve ts).
            conn.execute(f"CREATE INDEX IF NOT EXISTS {quote(self.table + '_ts_idx')} ON {t} (ts)")
            if partitioned:
                conn.execute(f"CREATE TABLE IF NOT EXISTS {quote(self.table + '_default')} PARTITION OF {t} DEFAULT")
            conn.execute(_meta_ddl())

        self._run(work)
        self._partitioned = None

    def _is_partitioned(self, conn: Any) -> bool:
        if self._partitioned is None:
            row = conn.execute("SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass(%s)", (self._t,)).fetchone()
            self._partitioned = bool(row and row[0] == "p")
        return self._partitioned

    def _ensure_partitions(self, conn: Any, records: Sequence[ExecutionRecord]) -> None:
        days = {r.ts.astimezone(timezone.utc).date() for r in records}
        for day in sorted(days):
            name = f"{self.table}_p{day:%Y%m%d}"
            if name in self._partitions:
                continue
            start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
            try:
                with conn.transaction():
                    end = start + timedelta(days=1)
                    conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {quote(name)} PARTITION OF {self._t} "
                        f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
                    )
            except Exception:  # a concurrent creator won, or the default partition holds rows of that day
                pass
            self._partitions.add(name)

    def write_batch(self, records: Sequence[ExecutionRecord]) -> int:
        if not records:
            return 0
        try:
            rows = [(r.id, r.ts, r.level, r.logger, r.message, json.dumps(r.fields), r.host, r.pid) for r in records]
        except (TypeError, ValueError, RecursionError) as exc:
            # Fields JSON cannot hold: a spool an older version wrote, a hand-made task nested ~1000 deep.
            raise RecordRefused(f"a record's fields cannot be stored as JSON: {exc}") from exc

        def work(conn: Any) -> int:
            if self._is_partitioned(conn):
                self._ensure_partitions(conn, records)
            with conn.transaction(), conn.cursor() as cur:
                if len(rows) >= COPY_THRESHOLD:
                    like = f"(LIKE {self._t} INCLUDING DEFAULTS)"
                    return _copy_then_insert(cur, self._t, "flocklog_incoming", like, _COLUMNS, rows, _COLUMNS)
                else:
                    columns = list(zip(*rows, strict=True))
                    cur.execute(
                        f"INSERT INTO {self._t} ({_COLUMNS}) "
                        "SELECT u.id, u.ts, u.level, u.logger, u.message, u.fields::jsonb, u.host, u.pid FROM unnest("
                        "%s::uuid[], %s::timestamptz[], %s::smallint[], %s::text[], %s::text[], %s::text[], "
                        "%s::text[], %s::int[]) AS u(id, ts, level, logger, message, fields, host, pid) "
                        "ON CONFLICT (id, ts) DO NOTHING",
                        [list(column) for column in columns],
                    )
                return int(cur.rowcount)

        return int(self._run(work))

    def write_wire_rows(self, rows: Sequence[Sequence[Any]]) -> int | None:
        """Write rows as the Celery task carries them, ``[id hex, ts seconds, level, logger, message, fields,
        host, pid]``, without building records: the rows added, or None when the caller must take the record path.

        Profiled in the worker at 1000-record batches: decoding into records and COPYing them cost ~10 us a record
        of Python; this costs ~5, for the same work in PostgreSQL (the id goes in as text, ``ts`` as float8 turned
        into the timestamp in SQL, bit-identical to ``datetime.fromtimestamp``: see ``_WIRE_TS``). The caller
        passes only rows of exactly these types, ``ts`` in :data:`~flocklog.store.WIRE_TS_RANGE`. None for a
        partitioned table (write_batch makes its daily partitions), and whenever PostgreSQL refuses anything (a
        poison record: the record path isolates it so its neighbours are stored); nothing is written then. Only an
        unreachable or failing database raises :class:`StoreError`, as write_batch would for the same rows.
        """
        import psycopg

        if not rows:
            return 0
        dumps = json.dumps
        try:
            copied = [(r[0], r[1], r[2], r[3], r[4], dumps(r[5]), r[6], r[7]) for r in rows]
        except (TypeError, ValueError, RecursionError):  # the record path isolates the one that cannot be stored
            return None

        def work(conn: Any) -> int | None:
            if self._is_partitioned(conn):
                return None
            try:
                with conn.transaction(), conn.cursor() as cur:
                    select = f"id, {_WIRE_TS}, level, logger, message, fields, host, pid"
                    return _copy_then_insert(cur, self._t, "flocklog_wire", _WIRE_TABLE, _WIRE_COLUMNS, copied, select)
            except (psycopg.OperationalError, psycopg.InterfaceError):
                raise  # the database itself: _run makes it a StoreError, and write_batch would fail alike
            except (psycopg.Error, UnicodeError):
                return None  # refused (or not what this path expects): the record path decides, as before

        result: int | None = self._run(work)
        return result

    def count(self) -> int:
        return int(self._run(lambda conn: conn.execute(f"SELECT count(*) FROM {self._t}").fetchone()[0]))

    def oldest(self) -> datetime | None:
        value = self._run(lambda conn: conn.execute(f"SELECT min(ts) FROM {self._t}").fetchone()[0])
        return value if isinstance(value, datetime) else None

    def last_cleanup(self) -> Any:
        """The summary the last cleanup recorded (a dict), or None if there was none."""

        def work(conn: Any) -> Any:
            if conn.execute("SELECT to_regclass(%s)", (META_TABLE,)).fetchone()[0] is None:
                return None
            row = conn.execute(f"SELECT value FROM {META_TABLE} WHERE key = %s", (META_KEY,)).fetchone()
            return row[0] if row else None

        return _decode_summary(self._run(work))

    def close(self) -> None:
        if self._pool is not None and self._pid == os.getpid():
            self._pool.close()
        self._pool = None


def _decode_summary(raw: Any) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


class PostgresRetention(RetentionBackend):
    """Retention on PostgreSQL: one autocommit connection, a short transaction per batch or partition drop."""

    def __init__(self, url: str, table: str) -> None:
        import psycopg

        self.table = table
        try:
            self.conn: psycopg.Connection[Any] = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {redact(url)} for cleanup: {exc}") from exc
        self.conn.execute("SET TIME ZONE 'UTC'")
        self._leaves: list[str] | None = None
        self.partitioned = False

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
            "SELECT c.relkind::text FROM pg_class c WHERE c.oid = to_regclass(%s)", (quote(self.table),)
        )
        if kind is None:
            raise ConfigError(f"table {self.table!r} does not exist in this database: create the schema first")
        self.partitioned = kind == "p"

    def leaves(self) -> list[str]:
        if not self.partitioned:
            return [self.table]
        if self._leaves is None:
            rows = self.conn.execute(
                "SELECT c.relname FROM pg_partition_tree(to_regclass(%s)) t JOIN pg_class c ON c.oid = t.relid"
                " WHERE t.isleaf AND c.relkind = 'r'",
                (quote(self.table),),
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
            (quote(self.table),),
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

        for _ in range(_DROP_ATTEMPTS):
            try:
                with self.conn.transaction():
                    self.conn.execute(f"SET LOCAL lock_timeout = '{_DROP_LOCK_TIMEOUT}'")
                    self.conn.execute(f"ALTER TABLE {quote(self.table)} DETACH PARTITION {quote(name)}")
                    rows = int(self._scalar(f"SELECT count(*) FROM {quote(name)}"))
                    self.conn.execute(f"DROP TABLE {quote(name)}")
                self._leaves = None
                return rows
            except psycopg.errors.LockNotAvailable:
                time.sleep(0.5)
        return None  # still busy: its rows are removed by the batched delete that follows

    def count_relation(self, name: str) -> int:
        return int(self._scalar(f"SELECT count(*) FROM {quote(name)}"))

    def count_older(self, cutoff: datetime) -> int:
        return int(self._scalar(f"SELECT count(*) FROM {quote(self.table)} WHERE ts < %s", (cutoff,)))

    def count_newer_or_equal(self, cutoff: datetime | None) -> int:
        if cutoff is None:
            return int(self._scalar(f"SELECT count(*) FROM {quote(self.table)}"))
        return int(self._scalar(f"SELECT count(*) FROM {quote(self.table)} WHERE ts >= %s", (cutoff,)))

    def ts_value(self, moment: datetime) -> Any:
        return moment

    def ts_plus(self, value: Any, span: timedelta) -> Any:
        return value + span

    def oldest_from(self, leaf: str, lower: Any, cutoff: Any) -> Any:
        if lower is None:
            return self._scalar(f"SELECT min(ts) FROM {quote(leaf)} WHERE ts < %s", (cutoff,))
        return self._scalar(f"SELECT min(ts) FROM {quote(leaf)} WHERE ts >= %s AND ts < %s", (lower, cutoff))

    def delete_oldest(self, leaf: str, lower: Any, upper: Any, batch_size: int) -> tuple[int, Any]:
        # ctid = ANY(ARRAY(...)) is planned as a TID scan: each batch touches only the rows it deletes; the inner
        # ORDER BY ts LIMIT walks the ts index from the keyset bound. ctids are per leaf (unique per partition).
        row = self.conn.execute(
            f"WITH gone AS (DELETE FROM {quote(leaf)} WHERE ctid = ANY(ARRAY("
            f"SELECT ctid FROM {quote(leaf)} WHERE ts >= %s AND ts < %s ORDER BY ts LIMIT {int(batch_size)}"
            ")) RETURNING ts) SELECT count(*), max(ts) FROM gone",
            (lower, upper),
        ).fetchone()
        return (int(row[0]), row[1]) if row else (0, None)

    def delete_beyond_newest(self, keep: int, batch_size: int, hook: Hook) -> tuple[int, int]:
        params: tuple[Any, ...] = ()
        where = "TRUE"
        if keep:
            row = self.conn.execute(
                f"SELECT ts, id FROM {quote(self.table)} ORDER BY ts DESC, id DESC OFFSET %s LIMIT 1", (keep - 1,)
            ).fetchone()
            if row is None:
                return 0, 0
            where, params = "(ts, id) < (%s, %s)", (row[0], row[1])
        total = count = 0
        for leaf in self.leaves():
            query = (
                f"DELETE FROM {quote(leaf)} WHERE ctid = ANY(ARRAY("
                f"SELECT ctid FROM {quote(leaf)} WHERE {where} LIMIT {int(batch_size)}))"
            )

            def run(query: str = query) -> int:
                return int(self.conn.execute(query, params).rowcount)

            for deleted in batches(run, batch_size):
                total += deleted
                count += 1
                hook(count, deleted)
        return total, count

    def record(self, summary: str) -> None:
        import psycopg

        # Two sessions creating it at once make one fail (IF NOT EXISTS is not atomic in PostgreSQL): it exists now.
        with contextlib.suppress(psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
            self.conn.execute(_meta_ddl())
        self.conn.execute(
            f"INSERT INTO {META_TABLE} (key, value) VALUES (%s, %s)"
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (META_KEY, summary),
        )

    def close(self) -> None:
        self.conn.close()
