"""The production store: PostgreSQL through psycopg 3, a small pool per process, idempotent bulk inserts.

Small batches go in as one ``INSERT ... SELECT FROM unnest(arrays) ON CONFLICT DO NOTHING`` (one round trip, exact
row count); large ones are COPYed into a temp table first (DESIGN.md: ~68k rows/s at batch 1000).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from flocklog.errors import StoreError

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from flocklog.record import ExecutionRecord

COPY_THRESHOLD = 500
_COLUMNS = "id, ts, level, logger, message, fields, host, pid"


class PostgresStore:
    dialect = "postgresql"

    def __init__(self, url: str, table: str, *, max_connections: int = 4, connect_timeout: float = 5.0) -> None:
        self.url = url
        self.table = table
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
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
            raise StoreError(f"PostgreSQL is unreachable or failed ({type(exc).__name__}: {exc})") from exc
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL refused the write ({type(exc).__name__}: {exc})") from exc

    def create_schema(self, partitioned: bool = False) -> None:
        t = self.table
        partition = " PARTITION BY RANGE (ts)" if partitioned else ""

        def work(conn: Any) -> None:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {t} (id uuid NOT NULL, ts timestamptz NOT NULL, level smallint NOT NULL,"
                " logger text NOT NULL DEFAULT '', message text NOT NULL, fields jsonb NOT NULL DEFAULT '{}'::jsonb,"
                " host text NOT NULL DEFAULT '', pid integer NOT NULL DEFAULT 0,"
                f" inserted_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (id, ts)){partition}"
            )
            conn.execute(f"CREATE INDEX IF NOT EXISTS {t}_ts_idx ON {t} (ts)")
            if partitioned:
                conn.execute(f"CREATE TABLE IF NOT EXISTS {t}_default PARTITION OF {t} DEFAULT")
            conn.execute("CREATE TABLE IF NOT EXISTS flocklog_meta (key text PRIMARY KEY, value text NOT NULL)")

        self._run(work)
        self._partitioned = None

    def _is_partitioned(self, conn: Any) -> bool:
        if self._partitioned is None:
            row = conn.execute(
                "SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass(%s)", (self.table,)
            ).fetchone()
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
                        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {self.table} "
                        f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
                    )
            except Exception:  # a concurrent creator won, or the default partition holds rows of that day
                pass
            self._partitions.add(name)

    def write_batch(self, records: Sequence[ExecutionRecord]) -> int:
        if not records:
            return 0
        rows = [(r.id, r.ts, r.level, r.logger, r.message, json.dumps(r.fields), r.host, r.pid) for r in records]

        def work(conn: Any) -> int:
            if self._is_partitioned(conn):
                self._ensure_partitions(conn, records)
            with conn.transaction(), conn.cursor() as cur:
                if len(rows) >= COPY_THRESHOLD:
                    cur.execute(
                        f"CREATE TEMP TABLE IF NOT EXISTS flocklog_incoming (LIKE {self.table} INCLUDING DEFAULTS) "
                        "ON COMMIT DELETE ROWS"
                    )
                    with cur.copy(f"COPY flocklog_incoming ({_COLUMNS}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
                    cur.execute(
                        f"INSERT INTO {self.table} ({_COLUMNS}) SELECT {_COLUMNS} FROM flocklog_incoming "
                        "ON CONFLICT (id, ts) DO NOTHING"
                    )
                else:
                    columns = list(zip(*rows, strict=True))
                    cur.execute(
                        f"INSERT INTO {self.table} ({_COLUMNS}) "
                        "SELECT u.id, u.ts, u.level, u.logger, u.message, u.fields::jsonb, u.host, u.pid FROM unnest("
                        "%s::uuid[], %s::timestamptz[], %s::smallint[], %s::text[], %s::text[], %s::text[], "
                        "%s::text[], %s::int[]) AS u(id, ts, level, logger, message, fields, host, pid) "
                        "ON CONFLICT (id, ts) DO NOTHING",
                        [list(column) for column in columns],
                    )
                return int(cur.rowcount)

        return int(self._run(work))

    def count(self) -> int:
        return int(self._run(lambda conn: conn.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0]))

    def oldest(self) -> datetime | None:
        value = self._run(lambda conn: conn.execute(f"SELECT min(ts) FROM {self.table}").fetchone()[0])
        return value if isinstance(value, datetime) else None

    def close(self) -> None:
        if self._pool is not None and self._pid == os.getpid():
            self._pool.close()
        self._pool = None
