"""A producer that exits normally while the broker is down leaves its batches in the spool; the worker, started
later on the same host and spool directory, replays them by itself (issue #11 item 6): no `flocklog spool replay`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_helpers import Worker, count_rows, drop_table, free_port, service_env, start_producers, wait_until

pytestmark = [pytest.mark.postgres]
RECORDS = 300


@pytest.fixture
def table(postgres_dsn: str) -> Iterator[str]:
    name = f"flk_adopt_{uuid.uuid4().hex[:10]}"
    yield name
    drop_table(postgres_dsn, name)


def _spooled_records(spool: Path) -> int:
    return sum(len(path.read_text().splitlines()) for path in spool.glob("*.batch"))


def _cli_worker(env: dict[str, str], spool: Path, log: Path) -> subprocess.Popen[bytes]:
    """``flocklog worker --spool-dir``: the option alone tells the worker where the producers' spool is."""
    env = {k: v for k, v in env.items() if k != "FLOCKLOG_SPOOL_DIR"}
    args = ["worker", "--spool-dir", str(spool), "--pool", "solo", "-l", "info", "--without-gossip", "--without-mingle"]
    return subprocess.Popen(
        [sys.executable, "-m", "flocklog.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "ab"),  # the child owns it
        start_new_session=True,
    )


@pytest.mark.parametrize("started_by", ["celery", "flocklog worker --spool-dir"])
def test_worker_replays_the_spool_of_a_producer_that_exited_while_the_broker_was_down(
    tmp_path: Path, redis_url: str, postgres_dsn: str, table: str, started_by: str
) -> None:
    # Nothing listens on this port: every send fails and the producer spools, then exits normally.
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    (producer,) = start_producers(service_env(tmp_path, unreachable, postgres_dsn, table), 1, RECORDS, drain=5.0)
    producer.join(timeout=120)
    assert producer.exitcode == 0
    spool = tmp_path / "spool"
    assert _spooled_records(spool) == RECORDS

    env = service_env(tmp_path, redis_url, postgres_dsn, table)
    worker = Worker(env, tmp_path / "worker.log")
    cli = None
    if started_by == "celery":
        worker.start()
    else:
        cli = _cli_worker(env, spool, tmp_path / "worker.log")
    try:
        done = wait_until(
            lambda: count_rows(postgres_dsn, table) == (RECORDS, RECORDS) and not any(spool.iterdir()), 120
        )
        log = (tmp_path / "worker.log").read_text(errors="replace")
        assert done, (count_rows(postgres_dsn, table), sorted(p.name for p in spool.iterdir()), log[-3000:])
        assert "adopted the spool of exited producers" in log
    finally:
        worker.stop()
        if cli is not None and cli.poll() is None:
            os.killpg(cli.pid, signal.SIGTERM)
            try:
                cli.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(cli.pid, signal.SIGKILL)
                cli.wait(timeout=30)
