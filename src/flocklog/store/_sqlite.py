"""The embedded store: one SQLite file in WAL mode, ``ON CONFLICT (id, ts) DO NOTHING``."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from flocklog.errors import StoreError
from flocklog.store import sqlite_path

if TYPE_CHECKING:
    from flocklog.record import ExecutionRecord


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
        self.path = sqlite_path(url)
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            _enable_wal(conn, self.path)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def create_schema(self, partitioned: bool = False) -> None:
        """SQLite has no partitions; ``partitioned`` is accepted so one call works for both stores."""
        t = self.table
        conn = self._conn()
        conn.executescript(
            f"""
            CREATE TABLE IF NOT EXISTS {t} (
                id TEXT NOT NULL, ts REAL NOT NULL, level INTEGER NOT NULL, logger TEXT NOT NULL DEFAULT '',
                message TEXT NOT NULL, fields TEXT NOT NULL DEFAULT '{{}}', host TEXT NOT NULL DEFAULT '',
                pid INTEGER NOT NULL DEFAULT 0, inserted_at REAL NOT NULL,
                PRIMARY KEY (id, ts));
            CREATE INDEX IF NOT EXISTS {t}_ts_idx ON {t} (ts);
            CREATE TABLE IF NOT EXISTS flocklog_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            """
        )

    def write_batch(self, records: Sequence[ExecutionRecord]) -> int:
        now = time.time()
        rows = [
            (str(r.id), r.ts.timestamp(), r.level, r.logger, r.message, json.dumps(r.fields), r.host, r.pid, now)
            for r in records
        ]
        conn = self._conn()
        try:
            before = conn.total_changes
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                # ON CONFLICT on the key only: any other constraint failure must raise, not vanish.
                f"INSERT INTO {self.table} (id, ts, level, logger, message, fields, host, pid, inserted_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id, ts) DO NOTHING",
                rows,
            )
            conn.execute("COMMIT")
            return conn.total_changes - before
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"SQLite write to {self.path} failed: {exc}") from exc

    def count(self) -> int:
        return int(self._conn().execute(f"SELECT count(*) FROM {self.table}").fetchone()[0])

    def oldest(self) -> datetime | None:
        value = self._conn().execute(f"SELECT min(ts) FROM {self.table}").fetchone()[0]
        return None if value is None else datetime.fromtimestamp(float(value), timezone.utc)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            conn.close()
        self._local = threading.local()
