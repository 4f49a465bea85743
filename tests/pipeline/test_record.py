"""ExecutionRecord ids: made in the caller with a cheaper uuid4, so they must be exactly as good as uuid4's."""

from __future__ import annotations

import json
import os
import uuid

import pytest

from flocklog.pipeline.record import ExecutionRecord, _uuid4_fast, new_id


def test_the_fast_path_is_the_one_in_use_and_gives_real_version_4_uuids() -> None:
    assert new_id is _uuid4_fast
    ids = [new_id() for _ in range(100_000)]
    assert len(set(ids)) == len(ids)
    assert all(type(u) is uuid.UUID and u.version == 4 and u.variant == uuid.RFC_4122 for u in ids)
    assert all(uuid.UUID(str(u)) == u and uuid.UUID(bytes=u.bytes) == u for u in ids[:1000])
    ever_set = ever_clear = 0
    for u in ids:
        ever_set |= u.int
        ever_clear |= ~u.int & ((1 << 128) - 1)
    # 122 random bits take both values; the 6 version/variant bits are fixed (0100 and 10).
    assert bin(ever_set & ever_clear).count("1") == 122


def _ids_both_ways(count: int) -> list[bytes]:
    """Ids from new_id() and from records (``build`` passes the pid it already read), alternately."""
    return [new_id().bytes if i % 2 else ExecutionRecord.create(20, "m").id.bytes for i in range(count)]


def test_a_forked_child_never_repeats_the_parents_ids() -> None:
    new_id()  # the parent now holds fetched ids it has not used yet: the child must not inherit them
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, b"".join(_ids_both_ways(2000)))
        finally:
            os._exit(0)
    os.close(write)
    parent = set(_ids_both_ways(2000))
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    os.close(read)
    os.waitpid(pid, 0)
    child = {data[i : i + 16] for i in range(0, len(data), 16)}
    assert len(child) == 2000 and not parent & child


def test_records_carry_their_id_time_and_place() -> None:
    record = ExecutionRecord.create(20, "paid", "billing", amount=3, note=None, ratio=0.5)
    assert record.id.version == 4 and record.ts.tzinfo is not None and record.pid == os.getpid()
    assert ExecutionRecord.from_wire(record.to_wire()) == record


def test_the_celery_batch_format_carries_every_record_exactly() -> None:
    """``encode_batch`` / ``decode_batch`` (the task's argument) round-trip any record ``log()`` accepts."""
    import math

    from flocklog.pipeline.protocol import decode_batch, encode_batch

    records = [
        ExecutionRecord.create(20, "plain", "app", n=1, ok=True, none=None, ratio=0.1),
        ExecutionRecord.create(
            "WARNING", "ünïcödé ✓ \U0001f600", "billing", city="Zürich", nested={"a": [1, {"b": "c"}]}
        ),
        ExecutionRecord.create(40, 'quotes " and \\ backslashes\nnewline', "x", big=10**300, small=-(2**62), f=math.pi),
        ExecutionRecord.create(10, "", "", **{"": "empty name", "fields": {"level": 3}}),
    ]
    valid, malformed = decode_batch(encode_batch(records))
    assert malformed == []
    assert valid == records
    assert [type(r.id) for r in valid] == [uuid.UUID] * len(records)
    # 10**300 is beyond msgpack's 64 bits: that batch went as format 1; without it, as format 2 (packed).
    assert json.loads(encode_batch(records))["v"] == 1
    packed = [r for r in records if "big" not in r.fields]
    assert json.loads(encode_batch(packed))["v"] == 2
    assert decode_batch(encode_batch(packed)) == (packed, [])
    assert decode_batch(encode_batch(packed, version=1)) == (packed, [])


@pytest.mark.parametrize("version", [1, 2])
def test_a_malformed_row_of_a_batch_is_kept_aside_and_its_neighbours_decoded(version: int) -> None:
    from flocklog.pipeline.protocol import decode_batch, encode_batch, packed_text

    good = [ExecutionRecord.create(20, f"r{i}", "app", i=i) for i in range(3)]
    rows = json.loads(encode_batch(good, version=1))["rows"]
    rows[1:1] = [["not-a-uuid", 1.0, 20, "t", "m", {}, "h", 1], [1, 2, 3], "text"]
    rows.append([good[0].id.hex, str(good[0].ts.timestamp()), "20", "app", "careful path", {}, "h", 1])
    text = json.dumps({"v": 1, "rows": rows}) if version == 1 else packed_text(rows)
    valid, malformed = decode_batch(text)
    assert [r.message for r in valid] == ["r0", "r1", "r2", "careful path"]
    assert [row for row, _ in malformed] == [rows[1], [1, 2, 3], "text"]
    assert all(reason.startswith("not an execution-log record") for _, reason in malformed)
    for broken in (
        "[1, 2]",
        '{"v": 3, "rows": []}',
        "not json",
        '{"v": 1}',
        '{"v": 2, "packed": "not base64!"}',
        '{"v": 2, "packed": "kQ=="}',  # msgpack cut short
        '{"v": 2, "packed": "gQEC"}',  # a map with an integer key
        '{"v": 2, "packed": "AQ=="}',  # not a list of rows
    ):
        assert decode_batch(broken) == ([], [(broken, decode_batch(broken)[1][0][1])])
        assert "cannot be read" in decode_batch(broken)[1][0][1]


def test_ids_are_fetched_in_bulk_and_a_thread_pool_of_callers_never_shares_one() -> None:
    """Ids come from one os.urandom call per _IDS_PER_FETCH; callers on many threads each get distinct ones."""
    import threading

    from flocklog import record as record_module

    results: list[list[uuid.UUID]] = []

    def take() -> None:
        results.append([new_id() for _ in range(5 * record_module._IDS_PER_FETCH)])

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [u for batch in results for u in batch]
    assert len(set(ids)) == len(ids) == 8 * 5 * record_module._IDS_PER_FETCH
    assert all(u.version == 4 and u.variant == uuid.RFC_4122 for u in ids)


def test_from_wire_many_builds_what_from_wire_builds_and_refuses_what_it_refuses() -> None:
    import pytest

    from flocklog.errors import SerializationError

    good = ExecutionRecord.create(20, "m", "app", n=1, ratio=0.5).to_wire()
    variants: list[object] = [
        good,
        {**good, "id": uuid.UUID(good["id"]).hex},  # 32 digits instead of 36 characters
        {**good, "id": "{" + good["id"] + "}"},
        {**good, "id": good["id"].upper()},
        {**good, "ts": int(good["ts"])},
        {**good, "ts": str(good["ts"])},
        {**good, "level": "20"},
        {**good, "level": 20.7},
        {**good, "fields": None},
        {**good, "fields": []},
        {k: v for k, v in good.items() if k not in ("logger", "host", "pid")},
        {**good, "logger": 5, "host": None},
        {**good, "extra": 1},
    ]
    for item in variants:
        assert ExecutionRecord.from_wire_many([item]) == [ExecutionRecord.from_wire(item)]  # type: ignore[arg-type]
    for bad in [
        {**good, "id": "not-a-uuid"},
        {**good, "id": good["id"][:35] + "g"},
        {**good, "ts": "soon"},
        {**good, "fields": [1]},
        {k: v for k, v in good.items() if k != "message"},
    ]:
        with pytest.raises(SerializationError) as expected:
            ExecutionRecord.from_wire(bad)
        with pytest.raises(SerializationError) as got:
            ExecutionRecord.from_wire_many([good, bad])
        assert str(got.value) == str(expected.value)


def test_a_packed_batch_reads_field_names_that_are_not_text_as_format_1_stored_them() -> None:
    """A record built without ``build`` may carry ``{1: ...}``: msgpack packs it, its strict reader refuses it, and
    the whole batch would be kept aside; JSON (format 1) made the key ``"1"`` and stored every record."""
    from datetime import datetime, timezone

    from flocklog.pipeline.protocol import decode_batch, encode_batch

    fields = {1: "a", None: "b", 1.5: "c", "nested": {2: [{3: "d"}]}}
    odd = ExecutionRecord(20, "odd keys", "app", fields, new_id(), datetime.now(timezone.utc), "h", 1)
    batch = [ExecutionRecord.create(20, "plain", "app"), odd]
    assert json.loads(encode_batch(batch))["v"] == 2
    packed, malformed = decode_batch(encode_batch(batch))
    text, _ = decode_batch(encode_batch(batch, version=1))
    assert malformed == [] and [r.fields for r in packed] == [r.fields for r in text]
    assert packed[1].fields == {"1": "a", "null": "b", "1.5": "c", "nested": {"2": [{"3": "d"}]}}
