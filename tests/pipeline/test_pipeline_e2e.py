"""The whole pipeline on the real Redis and PostgreSQL, with a real Celery worker: exactly N rows, whatever fails."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_helpers import (
    CuttableProxy,
    PrivateRedis,
    Worker,
    broker_counts,
    count_rows,
    drop_table,
    service_env,
    start_producers,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]
PRODUCERS, EACH = 4, 2500
TOTAL = PRODUCERS * EACH


@pytest.fixture
def table(postgres_dsn: str) -> Iterator[str]:
    name = f"flk_e2e_{uuid.uuid4().hex[:10]}"
    yield name
    drop_table(postgres_dsn, name)


def _join(procs: list) -> None:  # type: ignore[type-arg]  # multiprocessing process objects
    for proc in procs:
        proc.join(timeout=180)
        assert proc.exitcode == 0


def _assert_exactly(dsn: str, table: str, worker_log: Path, broker: str | None = None) -> None:
    done = wait_until(lambda: count_rows(dsn, table)[0] >= TOTAL, timeout=150, interval=0.5)
    rows, distinct = count_rows(dsn, table)
    log_tail = "\n".join(line for line in worker_log.read_text().splitlines() if "succeeded" not in line)[-3000:]
    assert done and rows == TOTAL and distinct == TOTAL, (
        rows,
        distinct,
        (broker_counts(broker) if broker else {}),
        log_tail,
    )
    time.sleep(1.0)  # nothing more trickles in later (a redelivered batch would add duplicates here)
    assert count_rows(dsn, table) == (TOTAL, TOTAL)


def test_four_producers_ten_thousand_records_exactly_ten_thousand_rows(
    tmp_path: Path, redis_url: str, postgres_dsn: str, table: str
) -> None:
    env = service_env(tmp_path, redis_url, postgres_dsn, table)
    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    try:
        _join(start_producers(env, PRODUCERS, EACH))
        _assert_exactly(postgres_dsn, table, tmp_path / "worker.log")
    finally:
        worker.stop()
    assert not list((tmp_path / "spool").glob("*.batch"))


def test_redis_stopped_mid_run_spools_then_replays_exactly_once(tmp_path: Path, postgres_dsn: str, table: str) -> None:
    redis = PrivateRedis(tmp_path)
    redis.start()
    env = service_env(tmp_path, redis.url, postgres_dsn, table)
    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    try:
        producers = start_producers(env, PRODUCERS, EACH, pause_every=50, pause=0.12)
        assert wait_until(lambda: count_rows(postgres_dsn, table)[0] > 0, 120), "no row arrived"  # under way
        redis.stop()  # the broker goes away while producers are logging
        spooled = wait_until(lambda: bool(list((tmp_path / "spool").glob("*.batch"))), 60)
        assert any(p.is_alive() for p in producers)
        assert spooled, "producers should have spooled while Redis was down"
        redis.start()
        _join(producers)
        _assert_exactly(postgres_dsn, table, tmp_path / "worker.log")
    finally:
        worker.stop()
        redis.stop()


def test_worker_killed_mid_batch_and_restarted_loses_and_duplicates_nothing(
    tmp_path: Path, redis_url: str, postgres_dsn: str, table: str
) -> None:
    # A short visibility timeout so the batches the dead worker held unacked come back quickly.
    # kombu's Redis transport can lose the batch a worker had popped but not yet recorded as unacked: the
    # producers' receipt check (a short timeout here) resends what the worker never confirmed.
    env = service_env(
        tmp_path, redis_url, postgres_dsn, table, FLOCKLOG_VISIBILITY_TIMEOUT="3", FLOCKLOG_RECEIPT_TIMEOUT="5"
    )
    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    try:
        producers = start_producers(env, PRODUCERS, EACH, pause_every=50, pause=0.04)
        assert wait_until(lambda: count_rows(postgres_dsn, table)[0] > 0, 120), "no row arrived"  # under way
        worker.kill()  # SIGKILL to the whole worker: main process and prefork children
        rows_at_kill = count_rows(postgres_dsn, table)[0]
        time.sleep(1.0)
        worker.start()
        _join(producers)
        _assert_exactly(postgres_dsn, table, tmp_path / "worker.log", redis_url)
        assert 0 < rows_at_kill < TOTAL  # the kill really happened mid-run
    finally:
        worker.stop()


def test_postgres_unreachable_for_a_while_retries_then_lands_exactly(
    tmp_path: Path, redis_url: str, postgres_dsn: str, table: str
) -> None:
    pg_port = int(postgres_dsn.rsplit(":", 1)[1].split("/", 1)[0])
    proxy = CuttableProxy(pg_port)
    proxy.start()
    via_proxy = postgres_dsn.replace(f":{pg_port}/", f":{proxy.port}/")
    env = service_env(tmp_path, redis_url, via_proxy, table)
    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    try:
        producers = start_producers(env, PRODUCERS, EACH, pause_every=50, pause=0.04)
        assert wait_until(lambda: count_rows(postgres_dsn, table)[0] > 0, 120), "no row arrived"  # under way
        proxy.cut()  # every connection to PostgreSQL drops, new ones are refused
        # A COMMIT the server had already received when the cut came still lands: count once that has settled.
        seen = [count_rows(postgres_dsn, table)[0]]
        assert wait_until(lambda: seen.append(count_rows(postgres_dsn, table)[0]) or seen[-1] == seen[-2], 30, 0.5)
        rows_during_cut = seen[-1]
        time.sleep(3.0)
        assert count_rows(postgres_dsn, table)[0] == rows_during_cut  # really nothing got through
        proxy.restore()
        _join(producers)
        _assert_exactly(postgres_dsn, table, tmp_path / "worker.log")
    finally:
        worker.stop()
        proxy.close()
    assert "retry" in (tmp_path / "worker.log").read_text().lower()
