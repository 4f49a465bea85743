"""Both stores insert idempotently: a batch delivered twice (retry, redelivery, replay) adds no row."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_helpers import drop_table

from flocklog import ConfigError
from flocklog.pipeline.record import ExecutionRecord
from flocklog.store import open_store
from flocklog.store._postgres import COPY_THRESHOLD


@pytest.fixture
def pg_table(postgres_dsn: str) -> Iterator[str]:
    name = f"flk_store_{uuid.uuid4().hex[:10]}"
    yield name
    drop_table(postgres_dsn, name)


def _batch(n: int) -> list[ExecutionRecord]:
    return [ExecutionRecord.create(20, "event", "test", i=i, tags=["a", "b"]) for i in range(n)]


@pytest.mark.postgres
@pytest.mark.parametrize("size", [10, COPY_THRESHOLD + 50])  # the unnest path and the COPY path
def test_postgres_batch_written_twice_is_stored_once(postgres_dsn: str, pg_table: str, size: int) -> None:
    store = open_store(postgres_dsn, table=pg_table)
    store.create_schema()
    batch = _batch(size)
    assert store.write_batch(batch) == size
    assert store.write_batch(batch) == 0
    assert store.write_batch(batch[: size // 2] + _batch(3)) == 3
    assert store.count() == size + 3
    store.close()


@pytest.mark.postgres
def test_postgres_daily_partitions_are_created_as_records_arrive(postgres_dsn: str, pg_table: str) -> None:
    import psycopg

    store = open_store(postgres_dsn, table=pg_table)
    store.create_schema(partitioned=True)
    batch = _batch(5)
    assert store.write_batch(batch) == 5 and store.write_batch(batch) == 0
    day = batch[0].ts.strftime("%Y%m%d")
    with psycopg.connect(postgres_dsn) as conn:
        rows = conn.execute(f"SELECT count(*) FROM {pg_table}_p{day}").fetchone()
    assert rows == (5,)
    store.close()
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {pg_table}_p{day}, {pg_table}_default")


def test_sqlite_batch_written_twice_is_stored_once(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    store.create_schema()
    batch = _batch(100)
    assert store.write_batch(batch) == 100
    assert store.write_batch(batch) == 0
    assert store.count() == 100 and store.oldest() == min(r.ts for r in batch)


def test_bad_store_configuration_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="unsupported database URL"):
        open_store("mysql://nope")
    with pytest.raises(ConfigError, match="plain SQL identifier"):
        open_store("sqlite:///x.db", table="logs; DROP TABLE users")


def test_many_writers_opening_a_new_sqlite_database_at_once_all_get_in(tmp_path: Path) -> None:
    # Switching a new database to WAL fails at once ("database is locked") for all but one of the connections
    # that try together; each store must wait its turn instead of failing its first batch.
    import threading

    failures: list[str] = []
    for trial in range(60):
        url = f"sqlite:///{tmp_path / f'new-{trial}.db'}"
        start = threading.Barrier(12)

        def write(url: str = url, start: threading.Barrier = start) -> None:
            store = open_store(url)
            start.wait()
            try:
                store.create_schema()
                store.write_batch([ExecutionRecord.create(20, "hello", "t")])
            except Exception as exc:
                failures.append(repr(exc))
            finally:
                store.close()

        threads = [threading.Thread(target=write) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []
