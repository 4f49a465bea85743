"""The producer never drops silently, never dies, and refuses at log() what no store can hold (issue #11)."""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pipeline_helpers import Worker, count_rows, drop_table, free_port, pipeline_env, wait_until

from flocklog import ExecutionLogger, ExecutionLogHandler, SerializationError
from flocklog.errors import PipelineError
from flocklog.pipeline.transports import SpoolTransport


def _db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'db.sqlite'}"


def _logger(tmp_path: Path, **options: Any) -> ExecutionLogger:
    return ExecutionLogger("t", transport="direct", database_url=_db(tmp_path), spool_dir=tmp_path / "spool", **options)


def _rows(tmp_path: Path) -> list[tuple[int, str, str, dict[str, Any]]]:
    path = tmp_path / "db.sqlite"
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        try:
            rows = conn.execute("SELECT level, message, logger, fields FROM flocklog_execution_log").fetchall()
        except sqlite3.OperationalError:
            return []
    return [(level, message, logger, json.loads(fields)) for level, message, logger, fields in rows]


def _dropped(stats: dict[str, int]) -> int:
    return sum(count for key, count in stats.items() if key.startswith("dropped_"))


# -- 1. a full buffer spills; drops under the opt-in policies are reported


def test_a_full_buffer_spills_to_the_spool_by_default_and_loses_nothing(tmp_path: Path) -> None:
    logger = _logger(tmp_path, capacity=100, batch_size=10, max_batch=50, flush_interval=60)
    with logger._cond:  # the sender is held off while the burst arrives: the buffer really fills
        for i in range(1000):
            logger.info("burst", i=i)
        assert len(logger._buffer) <= 100  # memory stays bounded
    assert logger.flush(timeout=60)
    logger.close()
    stats = logger.stats()
    assert _dropped(stats) == 0 and stats["spilled"] > 0
    assert sorted(fields["i"] for _, _, _, fields in _rows(tmp_path)) == list(range(1000))
    assert stats["spool_records"] == 0


def test_drops_under_an_opt_in_policy_are_counted_and_warned_about_never_through_the_pipeline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # An ExecutionLogHandler on the flocklog logger itself: the warnings must not feed back into a pipeline.
    (tmp_path / "other").mkdir()
    echo = ExecutionLogHandler(_logger(tmp_path / "other"))
    flocklog_logger = logging.getLogger("flocklog")
    flocklog_logger.addHandler(echo)
    caplog.set_level(logging.WARNING, logger="flocklog")
    try:
        logger = _logger(tmp_path, capacity=10, batch_size=10, when_full="drop_newest", flush_interval=60)
        with logger._cond:
            for i in range(25):
                logger.info("n", i=i)
        logger.close()
    finally:
        flocklog_logger.removeHandler(echo)
        echo.close()
    assert logger.stats()["dropped_newest"] == 15 and logger.stats()["dropped"] == 15
    warnings = [r.getMessage() for r in caplog.records if r.name == "flocklog" and r.levelno == logging.WARNING]
    assert 1 <= len(warnings) < 15  # rate-limited: the first at once, the rest summed up (at close here)
    counted = sum(int(m) for w in warnings for m in re.findall(r"dropped_newest: (\d+) since", w))
    assert counted == 15
    assert _rows(tmp_path / "other") == []  # nothing of flocklog's own reports went through a pipeline


# -- 2. the sender never dies; flush() tells the truth; close() never raises


def test_a_field_changed_after_log_returned_changes_nothing_and_the_sender_lives(tmp_path: Path) -> None:
    logger = _logger(tmp_path, flush_interval=60)
    data: dict[str, Any] = {"items": [1, 2]}
    with logger._cond:  # not shipped yet while the caller mutates its dict
        logger.info("snapshot", data=data)
        data["items"].append(object())  # would make the batch unencodable had the record kept a reference
        data["new"] = object()
    assert logger.flush(timeout=30)
    logger.info("after")
    assert logger.flush(timeout=30)
    assert logger._thread is not None and logger._thread.is_alive()
    logger.close()
    rows = {message: fields for _, message, _, fields in _rows(tmp_path)}
    assert rows == {"snapshot": {"data": {"items": [1, 2]}}, "after": {}}


def test_an_int_too_long_to_print_is_refused_at_log_time_and_the_rest_lands(tmp_path: Path) -> None:
    logger = _logger(tmp_path)
    logger.info("before")
    with pytest.raises(SerializationError, match=r"'n'.*too long"):
        logger.info("huge", n=10**5000)
    logger.info("after")
    logger.close()
    assert sorted(message for _, message, _, _ in _rows(tmp_path)) == ["after", "before"]


def test_a_full_spool_disk_neither_kills_the_sender_nor_raises_and_flush_says_so(
    small_fs: Path, tmp_path: Path
) -> None:
    # The broker is down (nothing listens on the port) and the spool's 1 MiB disk fills up.
    logger = ExecutionLogger(
        "full",
        transport="celery",
        broker_url=f"redis://127.0.0.1:{free_port()}/0",
        spool_dir=small_fs,
        batch_size=50,
        flush_interval=0.2,
        retry_interval=0.2,
        drain_timeout=2,
    )
    payload = "x" * 5000
    for i in range(300):  # 1.5 MB of records for a 1 MiB disk
        logger.info("big", i=i, payload=payload)
    thread = logger._thread
    assert thread is not None
    assert wait_until(lambda: not thread.is_alive() or logger.counters["spool_errors"] > 0, timeout=120)
    assert thread.is_alive()
    assert logger.flush(timeout=2) is False  # records neither delivered nor spooled: not "flushed"
    # Space comes back (an operator moves the spool away): the held records go to the spool, nothing is lost.
    moved = tmp_path / "moved"
    moved.mkdir()
    for path in small_fs.glob("*.batch"):
        (moved / path.name).write_bytes(path.read_bytes())  # another file system: no rename
        path.unlink()
    assert logger.flush(timeout=120)
    logger.close()  # never raises into the application
    spooled = SpoolTransport(small_fs).backlog()[1] + SpoolTransport(moved).backlog()[1]
    assert spooled + _dropped(logger.stats()) == 300 and _dropped(logger.stats()) == 0


# -- 3. bad input: a clear SerializationError at log(), nothing else


def test_levels_by_name_and_fields_of_any_name(tmp_path: Path) -> None:
    logger = _logger(tmp_path)
    first = logger.log("INFO", "named", fields={"message": "m", "level": 1, "logger": "l", "fields": [1]})
    second = logger.info("keywords", message="m2", level="l2", logger="g2")
    third = logger.log("warning", 42, note="a number as message")
    assert (first.level, second.level, third.level, third.message) == (20, 20, 30, "42")
    with pytest.raises(SerializationError, match="LOUD"):
        logger.log("LOUD", "no such level")
    logger.close()
    rows = sorted(_rows(tmp_path), key=lambda row: row[1])
    assert rows == [
        (30, "42", "t", {"note": "a number as message"}),
        (20, "keywords", "t", {"message": "m2", "level": "l2", "logger": "g2"}),
        (20, "named", "t", {"message": "m", "level": 1, "logger": "l", "fields": [1]}),
    ]


def _deep(depth: int) -> list[Any]:
    root: list[Any] = []
    node = root
    for _ in range(depth):
        node.append([])
        node = node[0]
    return root


@pytest.mark.parametrize(
    ("message", "fields", "expected"),
    [
        ("nul\x00", {}, "the message.*NUL"),
        ("ok", {"note": "a\x00b"}, "'note'.*NUL"),
        ("ok", {"nested": {"k\x00": 1}}, "'nested'.*NUL"),
        ("lone \udc80", {}, "the message.*surrogate"),
        ("ok", {"deep": [{"x": ["\ud800"]}]}, "'deep'.*surrogate"),
        ("ok", {"deep": _deep(10_000)}, "'deep'.*nested deeper"),
        ("ok", {"blob": "x" * 10_000_000}, "over the 262,144-byte limit"),
        ("ok", {"ratio": float("nan")}, "'ratio'.*nan"),
    ],
)
def test_what_no_store_can_hold_is_a_serialization_error_at_log_time(
    tmp_path: Path, message: str, fields: dict[str, Any], expected: str
) -> None:
    logger = _logger(tmp_path)
    with pytest.raises(SerializationError, match=expected):
        logger.info(message, fields=fields)
    logger.info("fine")
    logger.close()
    assert [row[1] for row in _rows(tmp_path)] == ["fine"]


def test_the_record_size_limit_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logger = _logger(tmp_path, max_record_bytes=1000)
    with pytest.raises(SerializationError, match="1,000-byte limit"):
        logger.info("big", text="y" * 2000)
    logger.close()
    monkeypatch.setenv("FLOCKLOG_MAX_RECORD_BYTES", "5000")
    from_env = _logger(tmp_path)
    from_env.info("fits", text="y" * 2000)
    with pytest.raises(SerializationError, match="5,000-byte limit"):
        from_env.info("big", text="y" * 6000)
    from_env.close()


# -- 4. the spool holds only what is unconfirmed, and strays are picked up without a manual step


def test_replay_deletes_spooled_batches_the_worker_already_confirmed(tmp_path: Path, redis_url: str) -> None:
    import redis

    from flocklog.pipeline.record import ExecutionRecord  # the old path: this test runs on old code too
    from flocklog.pipeline.transports import RECEIPT_PREFIX, CeleryTransport, replay_spool

    spool = SpoolTransport(tmp_path / "spool")
    confirmed = [ExecutionRecord.create(20, "delivered before it was spooled", "t") for _ in range(5)]
    unconfirmed = [ExecutionRecord.create(20, "never delivered", "t") for _ in range(3)]
    spool.send(confirmed, "a" * 32)
    spool.send(unconfirmed, "b" * 32)
    client = redis.Redis.from_url(redis_url)
    client.set(RECEIPT_PREFIX + "a" * 32, "1")  # what the worker leaves after committing a batch
    target = CeleryTransport(redis_url)
    counts: collections.Counter[str] = collections.Counter()
    try:
        assert replay_spool(spool, target, counts=counts) == 3
        assert counts["already_confirmed"] == 5
        assert list(target.outstanding) == ["b" * 32]  # resent under its own id: its receipt will confirm it
    finally:
        target.close()
        client.close()
    assert spool.backlog() == (0, 0)


def test_a_batch_another_process_left_in_the_spool_is_delivered_without_a_manual_step(tmp_path: Path) -> None:
    logger = _logger(tmp_path, flush_interval=0.5)
    logger.info("start")
    assert logger.flush(timeout=30)  # the start-up look at the spool is over
    from flocklog.pipeline.record import ExecutionRecord  # the old path: this test runs on old code too

    stray = [ExecutionRecord.create(20, "left by a process that exited while the broker was down", "t")]
    SpoolTransport(tmp_path / "spool").send(stray)
    assert wait_until(lambda: len(_rows(tmp_path)) == 2, timeout=90)
    logger.close()
    assert SpoolTransport(tmp_path / "spool").backlog() == (0, 0)


_PRODUCER = textwrap.dedent(
    """
    import json, os, sys
    from flocklog import ExecutionLogger

    logger = ExecutionLogger("burst")  # default settings: Celery on $FLOCKLOG_BROKER_URL, when_full, capacity...
    for i in range(int(sys.argv[1])):
        logger.info("burst", n=i, producer=os.getpid())
    logger.close()
    print(json.dumps(logger.stats()))
    """
)


def test_a_flat_out_burst_of_4_producers_with_default_settings_loses_nothing(
    tmp_path: Path, redis_url: str, postgres_dsn: str, subprocess_env: dict[str, str]
) -> None:
    table = f"t_burst_{os.getpid()}"
    drop_table(postgres_dsn, table)
    env = pipeline_env(
        subprocess_env,
        FLOCKLOG_BROKER_URL=redis_url,
        FLOCKLOG_DATABASE_URL=postgres_dsn,
        FLOCKLOG_TABLE=table,
        FLOCKLOG_SPOOL_DIR=str(tmp_path / "spool"),
        FLOCKLOG_DEAD_LETTER_DIR=str(tmp_path / "dead"),
    )
    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    try:
        producers = [
            subprocess.Popen(
                [sys.executable, "-c", _PRODUCER, "20000"],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        stats = []
        for proc in producers:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
            stats.append(json.loads(out.strip().splitlines()[-1]))
        assert all(s["logged"] == 20_000 and _dropped(s) == 0 for s in stats), stats
        # Whatever a producer could not hand over before its drain deadline is in the spool, and a producer that
        # starts later delivers it (and deletes what the worker meanwhile confirmed) with no manual step.
        later = subprocess.run(
            [sys.executable, "-c", _PRODUCER, "0"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        assert later.returncode == 0, later.stderr
        assert wait_until(lambda: count_rows(postgres_dsn, table) == (80_000, 80_000), timeout=180), count_rows(
            postgres_dsn, table
        )
    finally:
        worker.stop()
        drop_table(postgres_dsn, table)
    assert SpoolTransport(tmp_path / "spool").backlog() == (0, 0)


class _Picky:
    """A transport (a real one, for a backend of the user's) that refuses any batch holding a 'poison' record."""

    name = "picky"

    def __init__(self) -> None:
        self.got: list[str] = []

    def send(self, records: Any, batch_id: str | None = None) -> None:
        if any(record.message == "poison" for record in records):
            raise PipelineError("refused: poison")
        self.got.extend(record.message for record in records)

    def close(self) -> None:
        pass


def test_a_spooled_batch_the_transport_refuses_does_not_hold_back_new_batches(tmp_path: Path) -> None:
    from flocklog.pipeline.record import ExecutionRecord  # the old path: this test runs on old code too

    SpoolTransport(tmp_path / "spool").send([ExecutionRecord.create(20, "poison", "t")])
    transport = _Picky()
    logger = ExecutionLogger("p", transport=transport, spool_dir=tmp_path / "spool", batch_size=5)  # type: ignore[arg-type]
    for i in range(10):
        logger.info(f"fresh {i}")
    assert wait_until(lambda: len(transport.got) == 10, timeout=60), transport.got
    logger.close()
    assert SpoolTransport(tmp_path / "spool").backlog()[1] == 1  # the refused one waits in the spool, counted


def test_batches_spooled_unconfirmed_at_exit_leave_the_spool_once_the_worker_confirms_them(
    tmp_path: Path, redis_url: str, postgres_dsn: str, subprocess_env: dict[str, str]
) -> None:
    table = f"t_receipts_{os.getpid()}"
    drop_table(postgres_dsn, table)
    env = pipeline_env(
        subprocess_env,
        FLOCKLOG_BROKER_URL=redis_url,
        FLOCKLOG_DATABASE_URL=postgres_dsn,
        FLOCKLOG_TABLE=table,
        FLOCKLOG_DEAD_LETTER_DIR=str(tmp_path / "dead"),
    )
    spool = tmp_path / "spool"
    # No worker yet: the batches wait on the broker, and at close() they are unconfirmed, so they are spooled too.
    first = ExecutionLogger("r", transport="celery", broker_url=redis_url, spool_dir=spool, batch_size=10)
    for i in range(30):
        first.info("confirmed later", i=i)
    first.close(timeout=1)
    assert first.stats()["spooled_unconfirmed"] == 30 and SpoolTransport(spool).backlog()[1] == 30
    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    try:
        assert wait_until(lambda: count_rows(postgres_dsn, table) == (30, 30), timeout=120)
        import redis

        from flocklog.pipeline.transports import RECEIPT_PREFIX

        ids = [SpoolTransport.batch_id_of(path) for path in SpoolTransport(spool).pending()]
        client = redis.Redis.from_url(redis_url)
        try:  # the worker leaves each receipt just after its commit: wait for those too
            assert wait_until(lambda: all(client.exists(f"{RECEIPT_PREFIX}{i}") for i in ids), timeout=120)
        finally:
            client.close()
        # A producer that starts later finds the spool, asks for the receipts, and deletes instead of resending.
        second = ExecutionLogger("r", transport="celery", broker_url=redis_url, spool_dir=spool)
        second.flush(timeout=60)  # starts the sender; another process's spool is its own business, not flush()'s
        assert wait_until(lambda: SpoolTransport(spool).backlog() == (0, 0), timeout=120), second.stats()
        stats = second.stats()
        second.close()
    finally:
        worker.stop()
        drop_table(postgres_dsn, table)
    assert stats.get("already_confirmed") == 30 and stats.get("replayed", 0) == 0, sorted(stats.items())
    assert SpoolTransport(spool).backlog() == (0, 0)
