"""Retention: exact dry-run counts, exact survivors, real batching, partition drops, on PostgreSQL and SQLite."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from flocklog.errors import ConfigError, StoreError
from flocklog.pipeline.record import ExecutionRecord
from flocklog.store import Store, open_store
from flocklog.store.cleanup import cleanup

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


@dataclass
class Table:
    """One test's own execution-log table: written through the pipeline's store, read back raw."""

    url: str
    name: str
    dialect: str
    connect: Callable[[], Any]

    def __post_init__(self) -> None:
        self.store = open_store(self.url, table=self.name)

    def insert(self, times: list[datetime], store: Store | None = None) -> None:
        records = [ExecutionRecord(level=20, message=f"m{i}", logger="t", ts=t) for i, t in enumerate(times)]
        assert (store or self.store).write_batch(records) == len(records)

    def times(self) -> list[datetime]:
        conn = self.connect()
        try:
            rows = conn.execute(f"SELECT ts, id FROM {self.name} ORDER BY ts, id").fetchall()
        finally:
            conn.close()
        if self.dialect == "postgresql":
            return [r[0] for r in rows]
        return [datetime.fromtimestamp(r[0], timezone.utc) for r in rows]

    def count(self) -> int:
        return len(self.times())


@pytest.fixture
def pg_table(postgres_dsn: str) -> Iterator[Table]:
    import psycopg

    name = f"flk_cleanup_{uuid.uuid4().hex[:10]}"
    table = Table(postgres_dsn, name, "postgresql", lambda: psycopg.connect(postgres_dsn, autocommit=True))
    table.store.create_schema()
    yield table
    table.store.close()
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name} CASCADE")


@pytest.fixture
def sqlite_table(tmp_path: Path) -> Iterator[Table]:
    path = tmp_path / "store.db"
    connect = lambda: sqlite3.connect(path, isolation_level=None, timeout=30)  # noqa: E731
    table = Table(f"sqlite:///{path}", "flocklog_execution_log", "sqlite", connect)
    table.store.create_schema()
    yield table
    table.store.close()


@pytest.fixture(params=["postgresql", "sqlite"])
def table(request: pytest.FixtureRequest) -> Table:
    fixture = "pg_table" if request.param == "postgresql" else "sqlite_table"
    return request.getfixturevalue(fixture)  # type: ignore[no-any-return]  # getfixturevalue is untyped


def spread(days: int = 800, per_day: int = 2) -> list[datetime]:
    """Rows 0..days days old, ``per_day`` per day at distinct times: about half are over 400 days old."""
    return [NOW - timedelta(days=d, hours=1 + 7 * k) for d in range(days + 1) for k in range(per_day)]


def test_dry_run_counts_exactly_the_old_rows_and_the_real_run_deletes_only_them(table: Table) -> None:
    times = spread()
    table.insert(times)
    cutoff = NOW - timedelta(days=400)
    expected_old = sum(1 for t in times if t < cutoff)
    assert 0 < expected_old < len(times)

    dry = cleanup(table.url, days=400, dry_run=True, table=table.name, now=NOW)
    assert dry.dry_run and dry.matched == expected_old and dry.deleted == 0
    assert dry.cutoff == cutoff
    assert table.count() == len(times), "a dry run deleted rows"

    real = cleanup(table.url, days=400, table=table.name, now=NOW, batch_size=200)
    assert real.deleted == expected_old
    left = table.times()
    assert sorted(left) == sorted(t for t in times if t >= cutoff)

    conn = table.connect()
    try:
        summary = conn.execute("SELECT value FROM flocklog_meta WHERE key = 'last_cleanup'").fetchone()[0]
    finally:
        conn.close()
    assert '"time"' in summary and '"deleted"' in summary


def test_keep_n_leaves_exactly_the_newest_n_and_either_rule_removes_a_row(table: Table) -> None:
    times = spread(days=300)
    table.insert(times)
    newest = sorted(times)[-250:]

    dry = cleanup(table.url, days=None, keep=250, dry_run=True, table=table.name, now=NOW)
    assert dry.matched == len(times) - 250
    assert table.count() == len(times)

    result = cleanup(table.url, days=None, keep=250, table=table.name, now=NOW, batch_size=64)
    assert result.deleted == len(times) - 250
    assert table.times() == newest

    # days=30 AND keep=100: the 100 newest survive (all younger than 30 days), the rest goes by one rule or other.
    young = [t for t in newest if t >= NOW - timedelta(days=30)]
    assert len(young) > 50
    both_dry = cleanup(table.url, days=30, keep=50, dry_run=True, table=table.name, now=NOW)
    assert both_dry.matched == 250 - 50
    cleanup(table.url, days=30, keep=50, table=table.name, now=NOW)
    assert table.times() == newest[-50:]


def test_deletes_in_many_short_batches_while_a_concurrent_writer_keeps_committing(table: Table) -> None:
    old = [NOW - timedelta(days=500, minutes=i) for i in range(1000)]
    table.insert(old)
    writer_commits = 0
    stop = threading.Event()
    errors: list[BaseException] = []
    progressed_mid_run: list[bool] = []

    def writer() -> None:
        nonlocal writer_commits
        store = open_store(table.url, table=table.name)  # its own connection
        try:
            while not stop.is_set():
                table.insert([datetime.now(timezone.utc)], store)  # one transaction per row
                writer_commits += 1
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            store.close()

    def on_batch(method: str, batch: int, rows: int) -> None:
        # Between two batches the cleanup must hold no lock: the writer commits again before batch 6 starts.
        # Were the whole cleanup one transaction (or one lock), this wait would expire.
        if batch in (3, 5):
            before = writer_commits
            deadline = threading.Event()
            for _ in range(600):
                if writer_commits > before:
                    break
                deadline.wait(0.05)
            progressed_mid_run.append(writer_commits > before)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        result = cleanup(
            table.url, days=365, batch_size=100, table=table.name, now=datetime.now(timezone.utc), on_batch=on_batch
        )
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors
    assert result.deleted == 1000
    assert result.batches >= 10
    assert result.method("age") is not None and result.method("age").batches >= 10  # type: ignore[union-attr]  # checked just before
    assert progressed_mid_run == [True, True]
    assert table.count() == writer_commits, "the writer's new rows must all survive"


def test_partitioned_table_drops_whole_old_partitions_and_trims_the_straddling_one(postgres_dsn: str) -> None:
    import psycopg

    name = f"flk_part_{uuid.uuid4().hex[:10]}"
    days = 12
    first_day = datetime(NOW.year, NOW.month, NOW.day, tzinfo=timezone.utc) - timedelta(days=days - 1)
    parts = [f"{name}_p{(first_day + timedelta(days=i)):%Y%m%d}" for i in range(days)]
    tbl = Table(postgres_dsn, name, "postgresql", lambda: psycopg.connect(postgres_dsn, autocommit=True))
    tbl.store.create_schema(partitioned=True)
    try:
        # 24 rows per day (one an hour): the pipeline's writer creates each day's partition.
        times = [first_day + timedelta(days=d, hours=h, minutes=30) for d in range(days) for h in range(24)]
        times = [t for t in times if t <= NOW]
        tbl.insert(times)
        # 10 very old rows written straight into the parent land in the DEFAULT partition: batch-deleted.
        ancient = [NOW - timedelta(days=900 + i) for i in range(10)]
        with psycopg.connect(postgres_dsn, autocommit=True) as conn, conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {name} (id, ts, level, message) VALUES (%s, %s, 20, 'old')",
                [(uuid.uuid4(), t) for t in ancient],
            )
        assert sorted(parts) == sorted(tbl_partitions(postgres_dsn, name) - {f"{name}_default"})
        now = NOW.replace(hour=6)  # cutoff = 4 days ago at 06:00: that day's partition straddles it
        cutoff = now - timedelta(days=4)
        expected_old = sum(1 for t in times + ancient if t < cutoff)
        straddling = f"{name}_p{cutoff:%Y%m%d}"
        whole_old = [p for p in parts if p < straddling]

        dry = cleanup(postgres_dsn, days=4, dry_run=True, table=name, now=now)
        assert dry.matched == expected_old
        assert sorted(dry.partitions_dropped) == sorted(whole_old)
        assert tbl.count() == len(times) + len(ancient)

        result = cleanup(postgres_dsn, days=4, table=name, now=now, batch_size=5)
        assert sorted(result.partitions_dropped) == sorted(whole_old)
        assert result.deleted == expected_old
        assert result.method("partition_drop").deleted == 24 * len(whole_old)  # type: ignore[union-attr]  # present when partitions were dropped
        assert result.method("age").deleted == 6 + 10  # type: ignore[union-attr]  # always present with days
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            existing = {r[0] for r in conn.execute("SELECT relname FROM pg_class WHERE relname LIKE %s", (name + "%",))}
        assert not existing & set(whole_old), "old partitions still exist in pg_class"
        assert straddling in existing and f"{name}_default" in existing
        assert tbl_partitions(postgres_dsn, name) == set(parts) - set(whole_old) | {f"{name}_default"}
        assert sorted(tbl.times()) == sorted(t for t in times if t >= cutoff)

        # keep-N across partitions: ctids are per partition, so each leaf is trimmed on its own.
        kept = cleanup(postgres_dsn, days=None, keep=30, table=name, now=now, batch_size=7)
        assert kept.deleted == len([t for t in times if t >= cutoff]) - 30
        assert tbl.times() == sorted(times)[-30:]
        assert {t.date() for t in tbl.times()} == {NOW.date(), (NOW - timedelta(days=1)).date()}
    finally:
        tbl.store.close()
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {name} CASCADE")


def tbl_partitions(dsn: str, name: str) -> set[str]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = to_regclass(%s)",
            (name,),
        ).fetchall()
    return {r[0] for r in rows}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"days": None, "keep": None}, "needs days="),
        ({"days": -1}, "days must be a number >= 0"),
        ({"keep": -5, "days": None}, "keep must be an integer >= 0"),
        ({"batch_size": 0}, "batch_size must be"),
        ({"table": "x; DROP TABLE y"}, "plain SQL identifier"),
    ],
)
def test_bad_arguments_raise_config_error_saying_what_to_fix(
    sqlite_table: Table, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        cleanup(sqlite_table.url, **kwargs)


def test_unsupported_url_and_missing_table_are_config_errors_and_a_broken_store_a_store_error(
    sqlite_table: Table, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="unsupported store URL"):
        cleanup("mysql://x/y")
    with pytest.raises(ConfigError, match="does not exist"):
        cleanup(sqlite_table.url, table="nope")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not an SQLite database " * 200)
    with pytest.raises(StoreError, match="run the cleanup again"):
        cleanup(f"sqlite:///{garbage}")


def test_cli_dry_run_then_cleanup_reports_what_went(sqlite_table: Table, monkeypatch: pytest.MonkeyPatch) -> None:
    from flocklog.cli import main

    times = spread(days=500, per_day=1)
    sqlite_table.insert(times)
    old = sum(1 for t in times if t < datetime.now(timezone.utc) - timedelta(days=100))
    monkeypatch.setenv("FLOCKLOG_DATABASE_URL", sqlite_table.url)  # --database defaults to the env
    runner = CliRunner()
    dry = runner.invoke(main, ["cleanup", "--days", "100", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    assert f'"matched": {old}' in dry.output
    assert sqlite_table.count() == len(times)

    real = runner.invoke(main, ["cleanup", "--keep", "7", "--database", sqlite_table.url, "--batch-size", "50"])
    assert real.exit_code == 0, real.output
    assert f"deleted {len(times) - 7} rows" in real.output
    assert sqlite_table.count() == 7

    bad = runner.invoke(main, ["cleanup", "--days", "-3"])
    assert bad.exit_code == 2 and "--days" in bad.output
    missing = runner.invoke(main, ["cleanup", "--database", "sqlite:////nonexistent/x.db"])
    assert missing.exit_code == 2 and "does not exist" in missing.output
