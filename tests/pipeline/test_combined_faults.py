"""The "done when" of the pipeline: one run, producers logging, the worker SIGKILLed, Redis stopped (no
persistence: it comes back empty) and PostgreSQL stopped; at the end the table equals what was logged and the
spool is empty, with no manual replay. Redis and PostgreSQL are private to the test (the shared ones stay up).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pipeline_helpers import PrivateRedis, Worker, broker_counts, count_rows, service_env, start_producers, wait_until
from private_services import PrivatePostgres, private_postgres_problem

from service_rules import need

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
PRODUCERS, EACH = 4, 2500
TOTAL = PRODUCERS * EACH
TABLE = "flk_faults"


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    problem = private_postgres_problem()
    need(problem is None, f"cannot run a private PostgreSQL: {problem}")
    server = PrivatePostgres()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path, persistent=False)
    server.start()
    yield server
    server.stop()


def _spooled(tmp_path: Path) -> int:
    return len(list((tmp_path / "spool").glob("*.batch")))


def test_worker_killed_redis_lost_postgres_stopped_in_one_run_table_equals_ground_truth(
    tmp_path: Path, redis: PrivateRedis, postgres: PrivatePostgres
) -> None:
    dsn = postgres.dsn
    env = service_env(tmp_path, redis.url, dsn, TABLE)
    env.pop("FLOCKLOG_VISIBILITY_TIMEOUT", None)
    env.pop("FLOCKLOG_RECEIPT_TIMEOUT", None)  # defaults: what a deployment gets
    log = tmp_path / "worker.log"
    worker = Worker(env, log)
    worker.start()
    producers: list[Any] = []

    def diagnose() -> str:
        tail = "\n".join(line for line in log.read_text().splitlines() if "succeeded" not in line)[-2500:]
        return f"rows={count_rows(dsn, TABLE)} spool={_spooled(tmp_path)} broker={broker_counts(redis.url)}\n{tail}"

    try:
        # ~25 s of logging per producer, so every fault below lands while they are still at it.
        producers = start_producers(env, PRODUCERS, EACH, pause_every=25, pause=0.25, drain=400)
        assert wait_until(lambda: count_rows(dsn, TABLE)[0] > 0, 120), diagnose()

        worker.kill()  # 1. SIGKILL: main process and children, batches in flight stranded unacked
        redis.stop()  # 2. Redis goes, and with no persistence the queue, the unacked batches and receipts go too
        assert wait_until(lambda: _spooled(tmp_path) > 0, 60), "producers should spool while Redis is down"
        postgres.stop("immediate")  # 3. the database goes too
        spooled = _spooled(tmp_path)
        assert wait_until(lambda: _spooled(tmp_path) > spooled, 60), "producers should go on spooling"
        assert any(proc.is_alive() for proc in producers), "the faults must land while producers are logging"

        postgres.start()
        redis.start()  # empty
        worker.start()  # no replay command, no manual step from here on

        for proc in producers:
            proc.join(timeout=480)
        assert [proc.exitcode for proc in producers] == [0] * PRODUCERS, diagnose()
        assert wait_until(lambda: count_rows(dsn, TABLE)[0] >= TOTAL, 240, 0.5), diagnose()
        time.sleep(1.0)  # a late redelivery would show up as a duplicate here
        assert count_rows(dsn, TABLE) == (TOTAL, TOTAL), diagnose()
        assert _spooled(tmp_path) == 0, diagnose()
        assert not list((tmp_path / "dead").glob("*")), "nothing may end in the dead letters"
    finally:
        worker.stop()
        for proc in producers:
            if proc.is_alive():
                proc.kill()
