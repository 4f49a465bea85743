"""Each dialect quotes identifiers one way everywhere, refuses bad rows as such, and isolates them in a batch."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from flocklog.pipeline.record import ExecutionRecord
from flocklog.store import open_store
from flocklog.store.cleanup import cleanup

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(params=["postgresql", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    yield request.getfixturevalue("postgres_dsn")


def _drop(url: str, table: str) -> None:
    if url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')


def _record(message: str = "m", ts: datetime | None = None, **fields: object) -> ExecutionRecord:
    # Built directly, as a spool written by an older version would hand it to the worker: no log()-time checks.
    return ExecutionRecord(level=20, message=message, logger="t", fields=dict(fields), ts=ts or NOW)


def test_a_mixed_case_table_is_created_written_and_cleaned_under_its_own_name(store_url: str) -> None:
    name = f"FlkMixed_{uuid.uuid4().hex[:8]}"
    store = open_store(store_url, table=name)
    try:
        store.create_schema()
        old = [_record(ts=NOW - timedelta(days=400 + i)) for i in range(5)]
        new = [_record(ts=NOW - timedelta(days=i)) for i in range(3)]
        assert store.write_batch(old + new) == 8
        result = cleanup(store_url, days=365, table=name, now=NOW, batch_size=2)
        assert result.deleted == 5
        assert store.count() == 3
        if store_url.startswith("postgresql"):
            import psycopg

            with psycopg.connect(store_url) as conn:
                found = conn.execute("SELECT relname FROM pg_class WHERE relname = %s", (name,)).fetchone()
            assert found == (name,), "the table must be created with the case it was given"
    finally:
        store.close()
        _drop(store_url, name)


POISON = [
    pytest.param({"message": "nul \x00 in the message"}, id="nul-message"),
    pytest.param({"message": "lone \ud800 surrogate"}, id="surrogate-message"),
    pytest.param({"message": "ok", "note": "nul \x00 in a field"}, id="nul-field"),
    pytest.param({"message": "ok", "note": "lone \udfff in a field"}, id="surrogate-field"),
]


@pytest.mark.parametrize("poison", POISON)
def test_a_poison_record_is_refused_alone_and_its_neighbours_are_stored(store_url: str, poison: dict[str, str]) -> None:
    from flocklog.store import RecordRefused, write_isolated

    name = f"flk_poison_{uuid.uuid4().hex[:8]}"
    store = open_store(store_url, table=name)
    try:
        store.create_schema()
        good = [_record(f"good {i}", n=i) for i in range(49)]
        bad = _record(**poison)  # type: ignore[arg-type]  # message plus a field
        if store_url.startswith("sqlite") and not any(0xD800 <= ord(c) < 0xE000 for c in poison["message"]):
            pytest.skip("SQLite stores NUL bytes, and fields go in as escaped JSON: nothing to refuse")
        batch = [*good[:20], bad, *good[20:]]
        with pytest.raises(RecordRefused):
            store.write_batch(batch)
        assert store.count() == 0, "a refused batch is rolled back as a whole"
        outcome = write_isolated(store, batch)
        assert outcome.written == 49
        assert [record.id for record, _ in outcome.refused] == [bad.id]
        assert outcome.refused[0][1], "the reason is kept"
        assert store.count() == 49
    finally:
        store.close()
        _drop(store_url, name)


def test_an_unreachable_database_is_a_store_error_not_a_refusal() -> None:
    from flocklog.errors import StoreError
    from flocklog.store import RecordRefused, write_isolated

    store = open_store("postgresql://postgres@127.0.0.1:1/test")

    with pytest.raises(StoreError) as caught:
        write_isolated(store, [_record()])
    assert not isinstance(caught.value, RecordRefused)
    store.close()


def test_sqlite_cleanup_finds_a_table_whatever_the_case_it_is_named_in(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    store = open_store(url, table="AuditLog")
    store.create_schema()
    store.write_batch([_record(ts=NOW - timedelta(days=500))])
    store.close()
    assert cleanup(url, days=365, table="auditlog", now=NOW).deleted == 1
    with sqlite3.connect(tmp_path / "x.db") as conn:
        assert conn.execute('SELECT count(*) FROM "AuditLog"').fetchone() == (0,)
