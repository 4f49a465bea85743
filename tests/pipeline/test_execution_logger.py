"""ExecutionLogger on its own: batching, flushing, draining, fork, full buffers, bad fields, broker outages."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_helpers import free_port, wait_until

from flocklog import ExecutionLogger, ExecutionLogHandler, SerializationError
from flocklog.errors import ConfigError, PipelineError
from flocklog.pipeline.transports import SpoolTransport, replay_spool
from flocklog.store import open_store


def _logger(tmp_path: Path, **options: object) -> ExecutionLogger:
    return ExecutionLogger(
        "t",
        transport="direct",
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        spool_dir=tmp_path / "spool",
        **options,  # type: ignore[arg-type]  # test knobs
    )


@contextlib.contextmanager
def _switching_threads_constantly() -> Iterator[None]:
    """Switch threads as often as the interpreter can, to hit the narrow windows between caller and sender."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def _rows(tmp_path: Path) -> int:
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.create_schema()
    try:
        return store.count()
    finally:
        store.close()


def test_log_returns_a_record_with_its_own_id_and_time_at_once(tmp_path: Path) -> None:
    logger = _logger(tmp_path)
    record = logger.info("charged", amount=12, user="u1")
    assert record.id.version == 4 and record.ts.tzinfo is not None and record.fields == {"amount": 12, "user": "u1"}
    logger.close()
    assert _rows(tmp_path) == 1


def test_a_full_batch_is_shipped_without_waiting_for_the_interval(tmp_path: Path) -> None:
    logger = _logger(tmp_path, batch_size=50, flush_interval=60)
    for i in range(50):
        logger.info("step", i=i)
    assert wait_until(lambda: _rows(tmp_path) == 50, timeout=10)
    logger.info("one more")
    time.sleep(0.5)
    assert _rows(tmp_path) == 50  # a partial batch waits for the interval (60 s here) or a flush
    assert logger.flush(timeout=10)
    assert _rows(tmp_path) == 51
    logger.close()


def test_a_partial_batch_is_shipped_after_the_interval(tmp_path: Path) -> None:
    logger = _logger(tmp_path, batch_size=50, flush_interval=0.3)
    logger.info("lonely")
    assert wait_until(lambda: _rows(tmp_path) == 1, timeout=10)
    logger.close()


def test_a_burst_is_shipped_as_a_few_large_batches(tmp_path: Path) -> None:
    logger = _logger(tmp_path, batch_size=50, max_batch=1000, flush_interval=60)
    with logger._cond:  # the sender is busy (held off) while the burst arrives
        for i in range(2500):
            logger.info("burst", i=i)
    assert logger.flush(timeout=30)
    assert logger.counters["batches"] == 3  # 1000 + 1000 + 500, not 50 batches of 50
    logger.close()
    assert _rows(tmp_path) == 2500


def test_the_sender_lingers_between_batches_instead_of_shipping_each_50(tmp_path: Path) -> None:
    logger = _logger(tmp_path, batch_size=10, linger=1.0, flush_interval=30)
    for i in range(10):
        logger.info("first", i=i)
    assert wait_until(lambda: _rows(tmp_path) == 10, timeout=10)
    for i in range(10):
        logger.info("second", i=i)
    time.sleep(0.3)
    assert _rows(tmp_path) == 10  # a full batch, but within the linger of the previous one
    assert wait_until(lambda: _rows(tmp_path) == 20, timeout=10)  # ... and shipped once the linger is over
    assert logger.counters["batches"] == 2
    logger.close()


def test_no_wake_up_is_lost_while_the_sender_races_the_callers(tmp_path: Path) -> None:
    # No flush and a 30 s interval: every batch must be shipped because a caller woke the sender for it. A
    # wake-up level left behind for records the sender had already taken used to silence the next one.
    logger = _logger(tmp_path, batch_size=5, max_batch=100_000, capacity=100_000, linger=0, flush_interval=30)
    with _switching_threads_constantly():
        for group in range(400):
            for i in range(5):
                logger.info("g", group=group, i=i)
            time.sleep(0.0002)
    assert wait_until(lambda: _rows(tmp_path) == 2000, timeout=10), _rows(tmp_path)
    logger.close()


def test_callers_dropping_the_oldest_while_the_sender_takes_a_batch_lose_nothing_uncounted(tmp_path: Path) -> None:
    # A buffer no bigger than a batch, always full: callers pop the oldest while the sender pops its batch.
    logger = _logger(tmp_path, batch_size=10, capacity=10, when_full="drop_oldest", linger=0, flush_interval=30)
    with _switching_threads_constantly():
        threads = [threading.Thread(target=lambda: [logger.info("x", i=i) for i in range(5000)]) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert logger._thread is not None and logger._thread.is_alive()  # the sender survived every race
    logger.close(timeout=30)
    stats = logger.stats()
    assert stats["logged"] == 20_000
    assert _rows(tmp_path) + stats["dropped_oldest"] + stats["spool_records"] == 20_000


def test_many_threads_log_while_another_closes_and_every_accepted_record_lands(tmp_path: Path) -> None:
    logger = _logger(tmp_path, batch_size=50, flush_interval=0.5, capacity=1_000_000)
    accepted = [0] * 8
    go = threading.Event()

    def hammer(slot: int) -> None:
        go.wait()
        for i in range(1_000_000):
            try:
                logger.info("t", slot=slot, i=i)
            except PipelineError:  # closed under our feet: this record was refused, not lost
                return
            accepted[slot] += 1

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    with _switching_threads_constantly():
        go.set()
        time.sleep(0.3)
        logger.close(timeout=1)  # the callers never stop: the drain runs out of time and spools the rest
        for thread in threads:
            thread.join()
    assert 0 < sum(accepted) < 8 * 1_000_000  # the close really raced the callers
    assert logger.counters["logged"] == sum(accepted)
    spooled = SpoolTransport(tmp_path / "spool").backlog()[1]
    assert _rows(tmp_path) + spooled == sum(accepted)


def test_batch_knobs_are_checked() -> None:
    with pytest.raises(ConfigError, match="max_batch"):
        ExecutionLogger("k", transport="spool", batch_size=50, max_batch=10)
    with pytest.raises(ConfigError, match="linger"):
        ExecutionLogger("k", transport="spool", linger=5, flush_interval=2)


def test_close_drains_everything(tmp_path: Path) -> None:
    logger = _logger(tmp_path, batch_size=7, flush_interval=30)
    for i in range(1000):
        logger.info("x", i=i)
    logger.close()
    assert _rows(tmp_path) == 1000


def test_a_field_json_cannot_hold_is_a_clear_error_and_the_rest_lands(tmp_path: Path) -> None:
    logger = _logger(tmp_path)
    logger.info("ok 1")
    with pytest.raises(SerializationError, match="when"):
        logger.info("bad", when=object())
    logger.info("ok 2")
    logger.close()
    assert _rows(tmp_path) == 2


def test_buffer_full_policies_count_what_they_drop(tmp_path: Path) -> None:
    # A transport that cannot keep up: the spool is a directory that cannot exist, and the primary is a dead broker.
    newest = ExecutionLogger(
        "n",
        transport="spool",
        spool_dir=tmp_path / "s1",
        capacity=10,
        batch_size=10,
        when_full="drop_newest",
        flush_interval=60,
    )
    oldest = ExecutionLogger(
        "o",
        transport="spool",
        spool_dir=tmp_path / "s2",
        capacity=10,
        batch_size=10,
        when_full="drop_oldest",
        flush_interval=60,
    )
    with newest._cond, oldest._cond:  # hold the senders off so the buffers really fill
        for i in range(25):
            newest.log(logging.INFO, "n", i=i)
            oldest.log(logging.INFO, "o", i=i)
    assert newest.stats()["dropped_newest"] == 15
    assert oldest.stats()["dropped_oldest"] == 15
    newest.close()
    oldest.close()
    kept = [
        json.loads(line)["fields"]["i"]
        for p in sorted((tmp_path / "s2").glob("*.batch"))
        for line in p.read_text().splitlines()
    ]
    assert kept == list(range(15, 25))  # drop_oldest kept the newest ten


def test_unreachable_broker_spools_and_a_replay_delivers_exactly_once(tmp_path: Path) -> None:
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    logger = ExecutionLogger(
        "b",
        transport="celery",
        broker_url=dead_broker,
        spool_dir=tmp_path / "spool",
        batch_size=10,
        max_batch=10,  # ten spool files, replayed in order
        flush_interval=0.2,
    )
    started = time.perf_counter()
    for i in range(95):
        logger.info("order", i=i)
    assert time.perf_counter() - started < 5  # the caller never waited for the dead broker
    logger.close()
    spool = SpoolTransport(tmp_path / "spool")
    assert spool.backlog() == (10, 95)
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    from flocklog.pipeline.transports import DirectTransport

    target = DirectTransport(f"sqlite:///{tmp_path / 'db.sqlite'}")
    assert replay_spool(spool, target) == 95
    assert replay_spool(spool, target) == 0  # nothing left to send twice
    assert store.count() == 95


def test_fallback_direct_writes_to_the_database_when_the_broker_is_down(tmp_path: Path) -> None:
    logger = ExecutionLogger(
        "f",
        transport="celery",
        broker_url=f"redis://127.0.0.1:{free_port()}/0",
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        spool_dir=tmp_path / "spool",
        fallback="direct",
        batch_size=10,
    )
    for i in range(30):
        logger.info("x", i=i)
    logger.close()
    assert _rows(tmp_path) == 30 and SpoolTransport(tmp_path / "spool").backlog() == (0, 0)


def test_a_forked_child_logs_on_its_own_and_does_not_resend_the_parents_buffer(tmp_path: Path) -> None:
    logger = _logger(tmp_path, batch_size=1000, flush_interval=60)
    for i in range(10):
        logger.info("parent", i=i)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for i in range(5):
                logger.info("child", i=i)
            logger.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    logger.close()
    assert _rows(tmp_path) == 15


def test_stdlib_records_enter_the_same_pipeline(tmp_path: Path) -> None:
    handler = ExecutionLogHandler(_logger(tmp_path))
    std = logging.getLogger("flocklog.test.adapter")
    std.addHandler(handler)
    std.propagate = False
    std.warning("disk at %d%%", 91)
    handler.close()
    std.removeHandler(handler)
    assert _rows(tmp_path) == 1
