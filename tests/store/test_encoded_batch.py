"""The worker's short path (a batch's rows straight to PostgreSQL, no records) stores what the record path stores.

The key is ``(id, ts)``: a batch written by this path and replayed later through ``write_batch`` (a spool replay
``--to direct``) must find its rows already there, so ``ts`` has to come out bit-identical to
``datetime.fromtimestamp(float, utc)``, ties at half a microsecond included.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import psycopg
import pytest

from flocklog.pipeline.protocol import decode_batch, decode_rows, encode_batch, load_batch, packed_text, plain_rows
from flocklog.pipeline.record import ExecutionRecord
from flocklog.store import open_store, write_isolated
from flocklog.store._postgres import PostgresStore

pytestmark = pytest.mark.postgres

TS_LIMIT = 253402300799.0  # the fast path takes 1970 up to 9999-12-31T23:59:59; the Python path decides the rest


def _drop(dsn: str, *tables: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in tables:
            conn.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')


@pytest.fixture
def pair(postgres_dsn: str) -> Iterator[tuple[PostgresStore, PostgresStore]]:
    """Two empty tables: one written by the fast path, one by the Python path."""
    names = [f"flk_enc_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("fast", "py")]
    stores = []
    for name in names:
        store = open_store(postgres_dsn, table=name)
        assert isinstance(store, PostgresStore)
        store.create_schema()
        stores.append(store)
    yield stores[0], stores[1]
    for store in stores:
        store.close()
    _drop(postgres_dsn, *names)


def _fast(store: PostgresStore, text: str) -> int | None:
    """What the worker's task tries first: the rows as they are, when every one is plain; None if not taken."""
    rows, _ = load_batch(text)
    if rows is None or not plain_rows(rows):
        return None
    return store.write_wire_rows(rows)


def _worker_path(store: PostgresStore, text: str) -> int:
    """The task's whole path: the short one, else records with the malformed split out and poison isolated."""
    written = _fast(store, text)
    if written is not None:
        return written
    rows, _ = load_batch(text)
    return write_isolated(store, decode_rows(rows or [])[0]).written


def _python_path(store: PostgresStore, text: str) -> int:
    records, malformed = decode_batch(text)
    outcome = write_isolated(store, records)
    assert not malformed and not outcome.refused
    return outcome.written


def _rows(store: PostgresStore) -> dict[uuid.UUID, tuple[Any, ...]]:
    with psycopg.connect(store.url) as conn:
        found = conn.execute(
            f'SELECT id, ts, level, logger, message, fields::text, host, pid FROM "{store.table}"'
        ).fetchall()
    return {row[0]: tuple(row[1:]) for row in found}


def _text(rows: list[list[Any]]) -> str:
    return json.dumps({"v": 1, "rows": rows}, separators=(",", ":"))


def _row(ts: Any = 1764770000.123456, **changes: Any) -> list[Any]:
    row = {"id": uuid.uuid4().hex, "ts": ts, "level": 20, "logger": "app", "message": "m", "fields": {"n": 1}}
    row.update(host="h", pid=7)
    row.update(changes)
    return [row[key] for key in ("id", "ts", "level", "logger", "message", "fields", "host", "pid")]


def _timestamps() -> list[float]:
    """Producer-made times, arbitrary doubles across the range, and half-microsecond ties with their neighbours."""
    rng = random.Random(20261203)
    values = [0.0, 1.0, 0.5e-6, 1.5e-6, 2.5e-6, 0.9999995, 0.9999994999999999, 946684800.0000005, TS_LIMIT - 5e-7]
    values += [math.nextafter(TS_LIMIT, 0), 1e9 + 0.5e-6, 2**31 + 0.5e-6, 2**32 - 0.5e-6]
    start = datetime(2020, 1, 1, tzinfo=timezone.utc).timestamp()
    values += [start + rng.randrange(10**15) / 1e6 for _ in range(3000)]  # what datetime.timestamp() gives
    values += [rng.uniform(0, 4e9) for _ in range(3000)]
    values += [rng.uniform(0, TS_LIMIT) for _ in range(2000)]
    for _ in range(2000):
        tie = rng.randrange(0, int(TS_LIMIT) - 1) + (rng.randrange(10**6) + 0.5) / 1e6
        values += [tie, math.nextafter(tie, 0), math.nextafter(tie, math.inf)]
    for _ in range(1000):  # small magnitudes, where a double holds the fraction to far below a microsecond
        tie = rng.randrange(0, 4000) + (rng.randrange(10**6) + 0.5) / 1e6
        values += [tie, math.nextafter(tie, 0), math.nextafter(tie, math.inf)]
    return [value for value in values if 0 <= value < TS_LIMIT]


def test_ts_is_bit_identical_to_the_python_path_over_random_and_tie_timestamps(
    pair: tuple[PostgresStore, PostgresStore],
) -> None:
    fast, slow = pair
    values = _timestamps()
    rows = [_row(ts) for ts in values]
    for start in range(0, len(rows), 1000):
        text = _text(rows[start : start + 1000])
        assert _fast(fast, text) == len(rows[start : start + 1000])
        assert _python_path(slow, text) == len(rows[start : start + 1000])
    stored_fast, stored_slow = _rows(fast), _rows(slow)
    assert len(stored_fast) == len(values)
    expected = {uuid.UUID(row[0]): datetime.fromtimestamp(row[1], timezone.utc) for row in rows}
    differing = [key for key in stored_fast if stored_fast[key][0] != expected[key]]
    assert not differing, [(expected[key], stored_fast[key][0]) for key in differing[:5]]
    assert stored_fast == stored_slow
    # The replay case: the same batches through the Python path into the fast path's table add nothing.
    for start in range(0, len(rows), 1000):
        assert _python_path(fast, _text(rows[start : start + 1000])) == 0
    assert fast.count() == len(values)


def test_records_of_every_kind_log_accepts_are_stored_as_the_python_path_stores_them(
    pair: tuple[PostgresStore, PostgresStore],
) -> None:
    fast, slow = pair
    records = [
        ExecutionRecord.create(20, "plain", "app", n=1, ok=True, none=None, ratio=0.1, third=0.1 + 0.2),
        ExecutionRecord.create("WARNING", "ünïcödé ✓ \U0001f600", "billing", city="Zürich", nested={"a": [1, {}]}),
        ExecutionRecord.create(40, 'quote " backslash \\ newline \n tab \t', "", big=2**200, neg=-(2**70)),
        ExecutionRecord.create(10, "", "x", tiny=2.5e-300, small=1e-05, large=1e16, huge=1.5e300, zero=-0.0),
        ExecutionRecord.create(50, "deep", "y", deep=[[[[{"k": [None, False, "", 0]}]]]], empty={}, listed=[]),
        ExecutionRecord.create(20, "many", "z", **{f"f{i}": i * 1.5 for i in range(50)}),
        ExecutionRecord.create(20, "name-like keys", "z", fields={"level": 1, "fields": 2, "": 3, "ü": "\u2028"}),
    ]
    text = encode_batch(records)
    assert _fast(fast, text) == len(records)
    assert _python_path(slow, text) == len(records)
    assert _rows(fast) == _rows(slow)
    assert _fast(fast, text) == 0  # written twice, stored once


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(_row()[:7], id="seven-items"),
        pytest.param({"id": uuid.uuid4().hex}, id="an-object"),
        pytest.param(None, id="null-row"),
        pytest.param(_row(id=12345678901234567890123456789012), id="id-a-number"),
        pytest.param(_row(id="not-a-uuid"), id="id-not-a-uuid"),
        pytest.param(_row(id=None), id="id-null"),
        pytest.param(_row(ts="1764770000.5"), id="ts-text"),
        pytest.param(_row(ts=None), id="ts-null"),
        pytest.param(_row(ts=-1.5), id="ts-before-1970"),
        pytest.param(_row(ts=TS_LIMIT), id="ts-at-year-10000"),
        pytest.param(_row(level=20.5), id="level-fraction"),
        pytest.param(_row(level=20.0), id="level-float"),
        pytest.param(_row(level=True), id="level-bool"),
        pytest.param(_row(level="20"), id="level-text"),
        pytest.param(_row(level=70000), id="level-out-of-range-poison"),
        pytest.param(_row(pid=2**40), id="pid-out-of-range-poison"),
        pytest.param(_row(logger=None), id="logger-null"),
        pytest.param(_row(logger=5), id="logger-number"),
        pytest.param(_row(message=None), id="message-null"),
        pytest.param(_row(host=["h"]), id="host-list"),
        pytest.param(_row(fields=None), id="fields-null"),
        pytest.param(_row(fields=[]), id="fields-list"),
        pytest.param(_row(message="nul \x00 inside"), id="message-nul-poison"),
        pytest.param(_row(fields={"k": "nul \x00"}), id="field-nul-poison"),
        pytest.param(_row(host="lone \ud800 surrogate"), id="lone-surrogate-poison"),
    ],
)
def test_a_batch_with_any_row_the_fast_path_does_not_take_writes_nothing_and_the_python_path_decides(
    pair: tuple[PostgresStore, PostgresStore], bad: Any
) -> None:
    fast, slow = pair
    good = [_row(), _row()]
    text = _text([good[0], bad, good[1]])
    assert _fast(fast, text) is None
    assert fast.count() == 0
    # What the worker then does: decode, split out the malformed row, isolate a poison record; the good rows land.
    records, malformed = decode_batch(text)
    outcome = write_isolated(fast, records)
    assert {str(r.id).replace("-", "") for r in records} >= {good[0][0], good[1][0]}
    assert len(malformed) + len(outcome.refused) <= 1
    assert fast.count() == len(records) - len(outcome.refused)
    # The Python path alone on another table stores the very same rows.
    slow_records, _ = decode_batch(text)
    write_isolated(slow, slow_records)
    assert _rows(fast) == _rows(slow)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(_text([_row(fields={"deep": json.loads("[" * 70 + "]" * 70)})]), id="fields-nested-deep"),
        pytest.param(_text([_row()]).replace('"n":1', '"n":1e400'), id="number-beyond-a-double"),
        pytest.param(_text([_row()]).replace('"n":1', '"n":-1e400'), id="negative-number-beyond-a-double"),
        pytest.param(_text([_row()]).replace('"n":1', '"n":1e-400'), id="number-below-a-double"),
        pytest.param(_text([_row()]).replace('"n":1', '"n":0.1000000000000000055511151231257827'), id="long-float"),
        pytest.param(_text([_row(fields={"n": 5e-324})]), id="a-subnormal-double"),
        pytest.param(_text([_row()]).replace('"n":1', '"n":NaN'), id="nan"),
        pytest.param(_text([_row()]).replace('"v":1', '"v":2'), id="another-format"),
        pytest.param(_text([_row()]).replace('"rows"', '"rowz"'), id="no-rows"),
        pytest.param('[{"v":1}]', id="not-an-object"),
        pytest.param("not json", id="not-json"),
        pytest.param("", id="empty"),
    ],
)
def test_odd_texts_end_as_the_record_path_leaves_them(pair: tuple[PostgresStore, PostgresStore], text: str) -> None:
    fast, slow = pair
    rows, _ = load_batch(text)
    expected = write_isolated(slow, decode_rows(rows)[0]).written if rows is not None else 0
    assert _worker_path(fast, text) == expected
    assert _rows(fast) == _rows(slow)


def test_an_empty_batch_and_fields_nested_as_deep_as_log_allows_are_taken(
    pair: tuple[PostgresStore, PostgresStore],
) -> None:
    fast, slow = pair
    assert _fast(fast, _text([])) == 0
    deep: Any = "leaf"
    for _ in range(63):  # a container at depth 63 holding a scalar at 64: the deepest build() accepts
        deep = [deep]
    record = ExecutionRecord.create(20, "deep", "app", deep=deep)
    assert _fast(fast, encode_batch([record])) == 1
    assert _python_path(slow, encode_batch([record])) == 1
    assert _rows(fast) == _rows(slow)


def test_a_partitioned_table_is_left_to_write_batch_which_makes_its_daily_partitions(postgres_dsn: str) -> None:
    name = f"flk_enc_part_{uuid.uuid4().hex[:8]}"
    store = open_store(postgres_dsn, table=name)
    assert isinstance(store, PostgresStore)
    try:
        store.create_schema(partitioned=True)
        records = [ExecutionRecord.create(20, "m", "app", n=i) for i in range(3)]
        assert _fast(store, encode_batch(records)) is None
        assert store.count() == 0
        assert store.write_batch(records) == 3
    finally:
        store.close()
        _drop(postgres_dsn, name)


def test_an_unreachable_database_is_a_store_error_as_for_write_batch() -> None:
    from flocklog.errors import StoreError

    store = open_store("postgresql://postgres@127.0.0.1:1/test", table="flk_nowhere")
    assert isinstance(store, PostgresStore)
    store.connect_timeout = 1.0
    with pytest.raises(StoreError):
        _fast(store, _text([_row()]))
    store.close()


def test_a_packed_row_nested_beyond_what_json_writes_is_refused_alone_and_its_neighbours_stored(
    pair: tuple[PostgresStore, PostgresStore],
) -> None:
    """msgpack reads ~1000 levels, json.dumps gives up earlier: that row must be refused, not fail the task."""
    fast, _ = pair
    deep: Any = "leaf"
    for _ in range(1000):
        deep = [deep]
    good = [_row(), _row()]
    text = packed_text([good[0], _row(fields={"deep": deep}), good[1]])  # as a hand-made task could carry it
    assert load_batch(text)[0] is not None  # it reads: only writing it out as JSON fails
    assert _fast(fast, text) is None
    records, malformed = decode_batch(text)
    outcome = write_isolated(fast, records)
    assert not malformed and len(outcome.refused) == 1 and "cannot be stored as JSON" in outcome.refused[0][1]
    assert {str(i).replace("-", "") for i in _rows(fast)} == {good[0][0], good[1][0]}
