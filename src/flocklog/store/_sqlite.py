"""All of flocklog's SQLite SQL: the embedded store (one file in WAL mode, ``ON CONFLICT (id, ts) DO NOTHING``)
and its retention queries, every identifier through :func:`quote`."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flocklog.errors import ConfigError, StoreError
from flocklog.store import RecordRefused, sqlite_path
from flocklog.store._retention import META_KEY, META_TABLE, Hook, RetentionBackend, batches

if TYPE_CHECKING:
    from flocklog.record import ExecutionRecord


def quote(name: str) -> str:
    """``name`` as an SQLite identifier: the one quoting rule for every statement here."""
    return '"' + name.replace('"', '""') + '"'


# Errors about the rows themselves (a NOT NULL, an int too large, a lone surrogate): retrying cannot help.
_REFUSALS = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError, UnicodeError, OverflowError)
_META_DDL = f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL)"


def _enable_wal(conn: sqlite3.Connection, path: str, patience: float = 30.0) -> None:
    """Switch a database to WAL, waiting out other connections doing the same.

    Two processes opening a new database at once both try to switch it; the loser gets "database is locked" at
    once, without the busy timeout's wait, and its first batch would go to the spool for nothing.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise StoreError(f"SQLite database {path} could not be opened: {exc}") from exc
            time.sleep(0.01)


class SqliteStore:
    dialect = "sqlite"

    def __init__(self, url: str, table: str) -> None:
        self.url = url
        self.table = table
        self._t = quote(table)
        self.path = sqlite_path(url)
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            try:
                if self.path != ":memory:":
                    Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            except (OSError, sqlite3.Error) as exc:
                raise StoreError(f"SQLite database {self.path} could not be opened: {exc}") from exc
            _enable_wal(conn, self.path)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def create_schema(self, partitioned: bool = False) -> None:
        """SQLite has no partitions; ``partitioned`` is accepted so one call works for both stores."""
        t = self._t
        try:
            self._conn().executescript(
                f"""
                CREATE TABLE IF NOT EXISTS {t} (
                    id TEXT NOT NULL, ts REAL NOT NULL, level INTEGER NOT NULL, logger TEXT NOT NULL DEFAULT '',
                    message TEXT NOT NULL, fields TEXT NOT NULL DEFAULT '{{}}', host TEXT NOT NULL DEFAULT '',
                    pid INTEGER NOT NULL DEFAULT 0, inserted_at REAL NOT NULL,
                    PRIMARY KEY (id, ts));
                CREATE INDEX IF NOT EXISTS {quote(self.table + "_ts_idx")} ON {t} (ts);
                {_META_DDL};
                """
            )
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite schema in {self.path} could not be created: {exc}") from exc

    def write_batch(self, records: Sequence[ExecutionRecord]) -> int:
        now = time.time()
        try:
            rows = [
                (str(r.id), r.ts.timestamp(), r.level, r.logger, r.message, json.dumps(r.fields), r.host, r.pid, now)
                for r in records
            ]
        except (TypeError, ValueError, RecursionError) as exc:
            raise RecordRefused(f"a record's fields cannot be stored as JSON: {exc}") from exc
        conn = self._conn()
        try:
            before = conn.total_changes
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                # ON CONFLICT on the key only: any other constraint failure must raise, not vanish.
                f"INSERT INTO {self._t} (id, ts, level, logger, message, fields, host, pid, inserted_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id, ts) DO NOTHING",
                rows,
            )
            conn.execute("COMMIT")
            return conn.total_changes - before
        except _REFUSALS as exc:
            self._rollback(conn)
            raise RecordRefused(f"SQLite refused the data ({type(exc).__name__}: {exc})") from exc
        except sqlite3.Error as exc:
            self._rollback(conn)
            raise StoreError(f"SQLite write to {self.path} failed: {exc}") from exc

    def write_wire_rows(self, rows: Sequence[Sequence[Any]]) -> int | None:
        """No shortcut here (the embedded store is not where throughput matters): the caller builds records and
        calls :meth:`write_batch`."""
        return None

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    def count(self) -> int:
        return int(self._conn().execute(f"SELECT count(*) FROM {self._t}").fetchone()[0])

    def oldest(self) -> datetime | None:
        value = self._conn().execute(f"SELECT min(ts) FROM {self._t}").fetchone()[0]
        return None if value is None else datetime.fromtimestamp(float(value), timezone.utc)

    def last_cleanup(self) -> Any:
        """The summary the last cleanup recorded (a dict), or None if there was none."""
        try:
            row = self._conn().execute(f"SELECT value FROM {META_TABLE} WHERE key = ?", (META_KEY,)).fetchone()
        except sqlite3.OperationalError:  # no such table: never cleaned
            return None
        if not row:
            return None
        try:
            return json.loads(row[0])
        except ValueError:
            return row[0]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            conn.close()
        self._local = threading.local()


class SqliteRetention(RetentionBackend):
    """Retention on SQLite: autocommit, so every batch is its own transaction."""

    def __init__(self, url: str, table: str) -> None:
        self.table = table
        self._t = quote(table)
        path = sqlite_path(url)
        if not path or not Path(path).exists():
            raise ConfigError(f"SQLite store {path!r} does not exist: check the URL or create the schema first")
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
        # SQLite identifiers are case-insensitive: "Logs" and "logs" name one table.
        found = self._scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE", (self.table,)
        )
        if found is None:
            raise ConfigError(f"table {self.table!r} does not exist in this database: create the schema first")

    def count_older(self, cutoff: datetime) -> int:
        return int(self._scalar(f"SELECT count(*) FROM {self._t} WHERE ts < ?", (cutoff.timestamp(),)))

    def count_newer_or_equal(self, cutoff: datetime | None) -> int:
        if cutoff is None:
            return int(self._scalar(f"SELECT count(*) FROM {self._t}"))
        return int(self._scalar(f"SELECT count(*) FROM {self._t} WHERE ts >= ?", (cutoff.timestamp(),)))

    def ts_value(self, moment: datetime) -> Any:
        return moment.timestamp()

    def ts_plus(self, value: Any, span: timedelta) -> Any:
        return float(value) + span.total_seconds()

    def oldest_from(self, leaf: str, lower: Any, cutoff: Any) -> Any:
        if lower is None:
            return self._scalar(f"SELECT min(ts) FROM {quote(leaf)} WHERE ts < ?", (cutoff,))
        return self._scalar(f"SELECT min(ts) FROM {quote(leaf)} WHERE ts >= ? AND ts < ?", (lower, cutoff))

    def delete_oldest(self, leaf: str, lower: Any, upper: Any, batch_size: int) -> tuple[int, Any]:
        rows = self.conn.execute(
            f"DELETE FROM {quote(leaf)} WHERE rowid IN (SELECT rowid FROM {quote(leaf)} WHERE ts >= ? AND ts < ?"
            f" ORDER BY ts LIMIT {int(batch_size)}) RETURNING ts",
            (lower, upper),
        ).fetchall()
        return (len(rows), max(r[0] for r in rows)) if rows else (0, None)

    def delete_beyond_newest(self, keep: int, batch_size: int, hook: Hook) -> tuple[int, int]:
        if keep == 0:
            where = "1"
            params: tuple[Any, ...] = ()
        else:
            row = self.conn.execute(
                f"SELECT ts, id FROM {self._t} ORDER BY ts DESC, id DESC LIMIT 1 OFFSET ?", (keep - 1,)
            ).fetchone()
            if row is None:
                return 0, 0
            where, params = "(ts < ? OR (ts = ? AND id < ?))", (row[0], row[0], row[1])
        query = (
            f"DELETE FROM {self._t} WHERE rowid IN (SELECT rowid FROM {self._t} WHERE {where} LIMIT {int(batch_size)})"
        )
        total = count = 0
        for deleted in batches(lambda: int(self.conn.execute(query, params).rowcount), batch_size):
            total += deleted
            count += 1
            hook(count, deleted)
        return total, count

    def record(self, summary: str) -> None:
        self.conn.execute(_META_DDL)
        self.conn.execute(
            f"INSERT INTO {META_TABLE} (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (META_KEY, summary),
        )

    def close(self) -> None:
        self.conn.close()
