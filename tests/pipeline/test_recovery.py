"""Stranded batches come back with no manual step: a SIGKILLed worker's unacked batches, and early redelivery.

The worker is blocked on a table lock so batches are certainly in flight (unacked in Redis) when it is killed.
Producers use a long receipt timeout here, so they never resend themselves: what brings the batches back is the
broker's visibility-timeout sweep at its DEFAULT setting (the old default, 3600 s, left them stranded for an hour).
"""

from __future__ import annotations

import os
import re
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pipeline_helpers import (
    PrivateRedis,
    Worker,
    broker_counts,
    children_of,
    count_rows,
    drop_table,
    group_gone,
    service_env,
    start_producers,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
PRODUCERS, EACH = 2, 1000
TOTAL = PRODUCERS * EACH


@pytest.fixture
def table(postgres_dsn: str) -> Iterator[str]:
    name = f"flk_recover_{uuid.uuid4().hex[:10]}"
    yield name
    drop_table(postgres_dsn, name)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A Redis of this test alone: another test's stranded batches must not be swept into this table."""
    server = PrivateRedis(tmp_path, persistent=False)
    server.start()
    yield server
    server.stop()


def _table_exists(dsn: str, table: str) -> bool:
    import psycopg

    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        return conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() not in (None, (None,))


def _lock(dsn: str, table: str) -> Any:
    """Hold an exclusive lock on the table: every batch the worker takes blocks in its INSERT."""
    import psycopg

    conn = psycopg.connect(dsn, connect_timeout=5)
    conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    return conn


def _diagnose(dsn: str, table: str, broker: str, log: Path) -> str:
    tail = "\n".join(line for line in log.read_text().splitlines() if "succeeded" not in line)[-2000:]
    return f"rows={count_rows(dsn, table)} broker={broker_counts(broker)}\n{tail}"


def _join(procs: list[Any], timeout: float) -> None:
    for proc in procs:
        proc.join(timeout=timeout)
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=10)
    assert [proc.exitcode for proc in procs] == [0] * len(procs)


def _start_blocked(
    tmp_path: Path, env: dict[str, str], dsn: str, table: str, broker: str, extra: tuple[str, ...] = ()
) -> tuple[Worker, Any, Any]:
    """A worker whose batches all block on a table lock, producers logging into it, and batches unacked."""
    worker = Worker(env, tmp_path / "worker.log", extra=extra)
    worker.start()
    assert wait_until(lambda: _table_exists(dsn, table), 90), _diagnose(dsn, table, broker, tmp_path / "worker.log")
    lock = _lock(dsn, table)
    producers = start_producers(env, PRODUCERS, EACH, pause_every=50, pause=0.05, drain=400)
    assert wait_until(lambda: broker_counts(broker).get("unacked", 0) >= 2, 90), broker_counts(broker)
    return worker, lock, producers


def _finish(tmp_path: Path, dsn: str, table: str, broker: str, procs: list[Any]) -> None:
    log = tmp_path / "worker.log"
    assert wait_until(lambda: count_rows(dsn, table)[0] >= TOTAL, 240, 0.5), _diagnose(dsn, table, broker, log)
    _join(procs, 120)  # they exit normally once every batch is confirmed
    assert count_rows(dsn, table) == (TOTAL, TOTAL), _diagnose(dsn, table, broker, log)
    assert not list((tmp_path / "spool").glob("*.batch")), "every batch was confirmed: nothing may stay spooled"


def test_worker_main_process_sigkilled_its_unacked_batches_return_with_default_settings(
    tmp_path: Path, redis: PrivateRedis, postgres_dsn: str, table: str
) -> None:
    # No FLOCKLOG_VISIBILITY_TIMEOUT: the default must bring stranded batches back in tens of seconds.
    env = service_env(tmp_path, redis.url, postgres_dsn, table, FLOCKLOG_RECEIPT_TIMEOUT="3000")
    env.pop("FLOCKLOG_VISIBILITY_TIMEOUT", None)
    worker, lock, producers = _start_blocked(tmp_path, env, postgres_dsn, table, redis.url)
    replacement = Worker(env, tmp_path / "worker.log")
    try:
        assert worker.proc is not None
        os.kill(worker.proc.pid, signal.SIGKILL)  # the main process only; prefork children die with it
        worker.proc.wait(timeout=30)
        assert wait_until(lambda: group_gone(worker.proc.pid), 30), "prefork children outlived their parent"
        stranded = broker_counts(redis.url)["unacked"]
        assert stranded >= 2
        lock.rollback()
        lock.close()
        replacement.start()
        _finish(tmp_path, postgres_dsn, table, redis.url, producers)
    finally:
        lock.close()
        replacement.stop()
        worker.kill()
        for proc in producers:
            if proc.is_alive():
                proc.kill()


def test_prefork_child_sigkilled_mid_batch_its_batch_is_redelivered(
    tmp_path: Path, redis: PrivateRedis, postgres_dsn: str, table: str
) -> None:
    env = service_env(tmp_path, redis.url, postgres_dsn, table, FLOCKLOG_RECEIPT_TIMEOUT="3000")
    env.pop("FLOCKLOG_VISIBILITY_TIMEOUT", None)
    worker, lock, producers = _start_blocked(tmp_path, env, postgres_dsn, table, redis.url)
    try:
        assert worker.proc is not None
        children = children_of(worker.proc.pid)
        assert children, "the worker has no prefork children"
        os.kill(children[0], signal.SIGKILL)  # a child dies holding a batch; the main process lives on
        log = tmp_path / "worker.log"
        assert wait_until(lambda: "WorkerLostError" in log.read_text() or "signal 9" in log.read_text(), 60)
        lock.rollback()
        lock.close()
        _finish(tmp_path, postgres_dsn, table, redis.url, producers)
    finally:
        lock.close()
        worker.stop()
        for proc in producers:
            if proc.is_alive():
                proc.kill()


def _unacked_tags(url: str) -> set[bytes]:
    import redis as redis_py

    client = redis_py.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        return set(client.hkeys("unacked"))
    finally:
        client.close()


def test_batches_redelivered_while_still_running_add_no_duplicate_row(
    tmp_path: Path, redis: PrivateRedis, postgres_dsn: str, table: str
) -> None:
    # A visibility timeout far shorter than a (blocked) batch: the sweep hands out again batches the worker still
    # holds; once the lock goes, the worker writes both copies, and ON CONFLICT keeps one row per record.
    env = service_env(
        tmp_path, redis.url, postgres_dsn, table, FLOCKLOG_RECEIPT_TIMEOUT="3000", FLOCKLOG_VISIBILITY_TIMEOUT="2"
    )
    worker, lock, producers = _start_blocked(tmp_path, env, postgres_dsn, table, redis.url)
    log = tmp_path / "worker.log"
    try:
        held = _unacked_tags(redis.url)  # blocked on the lock: none of these can be acked before we release it
        assert wait_until(lambda: bool(held - _unacked_tags(redis.url)), 120), "the sweep restored nothing"
        lock.rollback()
        lock.close()
        _finish(tmp_path, postgres_dsn, table, redis.url, producers)

        def redelivered() -> bool:
            received = Counter(re.findall(r"write_batch\[([0-9a-f-]{36})\] received", log.read_text()))
            return any(count >= 2 for count in received.values())

        assert wait_until(redelivered, 60), _diagnose(postgres_dsn, table, redis.url, log)
        assert count_rows(postgres_dsn, table) == (TOTAL, TOTAL)
    finally:
        lock.close()
        worker.stop()
        for proc in producers:
            if proc.is_alive():
                proc.kill()


def test_batch_stuck_past_the_soft_time_limit_is_retried_not_acked_into_nothing(
    tmp_path: Path, redis: PrivateRedis, postgres_dsn: str, table: str
) -> None:
    # A write blocked past the task's soft time limit used to fail the task, and Celery acks a failed task: the
    # batch was gone from Redis (only a live producer's receipt check could resend it; this one never does).
    env = service_env(
        tmp_path, redis.url, postgres_dsn, table, FLOCKLOG_RECEIPT_TIMEOUT="3000", FLOCKLOG_TASK_TIME_LIMIT="5"
    )
    worker, lock, producers = _start_blocked(tmp_path, env, postgres_dsn, table, redis.url)
    log = tmp_path / "worker.log"
    try:
        assert wait_until(lambda: "SoftTimeLimitExceeded" in log.read_text(), 90), log.read_text()[-2000:]
        lock.rollback()
        lock.close()
        _finish(tmp_path, postgres_dsn, table, redis.url, producers)
        assert "retry" in log.read_text().lower()
    finally:
        lock.close()
        worker.stop()
        for proc in producers:
            if proc.is_alive():
                proc.kill()
