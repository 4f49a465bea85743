"""A producer that exits normally while the broker is down leaves its batches in the spool; the worker, started
later on the same host and spool directory, replays them by itself (issue #11 item 6): no `flocklog spool replay`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pipeline_helpers import (
    PrivateRedis,
    Worker,
    count_rows,
    drop_table,
    free_port,
    service_env,
    start_producers,
    wait_until,
)

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


def _status(env: dict[str, str], spool: Path) -> dict[str, Any]:
    """``flocklog status --json`` in a process of its own, as an operator runs it beside the worker."""
    result = subprocess.run(
        [sys.executable, "-m", "flocklog.cli", "status", "--json", "--spool", str(spool)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_status_shows_the_adopters_failures_while_the_broker_is_down_and_its_adoptions_after(
    tmp_path: Path, postgres_dsn: str, table: str
) -> None:
    broker = PrivateRedis(tmp_path, persistent=False)
    broker.start()
    env = service_env(tmp_path, broker.url, postgres_dsn, table)
    spool = tmp_path / "spool"
    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    log = tmp_path / "worker.log"
    try:
        assert wait_until(lambda: "ready." in log.read_text(errors="replace"), 120), log.read_text()[-3000:]
        running = _status(env, spool)
        assert running["adopter"].startswith("running in pid"), running
        assert running["adopter_adopted_spools"] == 0 and running["adopter_failures"] == 0, running

        broker.stop()  # the worker is up, its broker is not: the adoption below must fail, be counted and said
        unreachable = f"redis://127.0.0.1:{free_port()}/0"
        (producer,) = start_producers(service_env(tmp_path, unreachable, postgres_dsn, table), 1, RECORDS, drain=5.0)
        producer.join(timeout=120)
        assert producer.exitcode == 0 and _spooled_records(spool) == RECORDS

        failing: dict[str, Any] = {}

        def failed() -> bool:
            failing.update(_status(env, spool))
            return int(failing.get("adopter_failures", 0)) >= 1

        assert wait_until(failed, 120), failing
        assert "broker unreachable" in str(failing["adopter_last_error"]), failing
        assert failing["adopter_records_replayed"] == 0 and _spooled_records(spool) == RECORDS, failing
        assert "spool adoption from" in log.read_text(errors="replace")  # the warning on the flocklog logger

        broker.start()  # same port, empty: the next look replays the whole spool
        stored = wait_until(lambda: count_rows(postgres_dsn, table) == (RECORDS, RECORDS), 120)
        assert stored, (count_rows(postgres_dsn, table), log.read_text(errors="replace")[-3000:])
        after = _status(env, spool)
        assert after["adopter_records_replayed"] == RECORDS, after
        assert after["adopter_adopted_spools"] >= 1 and after["adopter_adoptions"] >= 1, after
        assert after["adopter_failures"] >= 1 and after["adopter_last_adoption"], after
        assert after["spool_records"] == 0, after
    finally:
        worker.stop()
        broker.stop()
    assert _status(env, spool)["adopter"].startswith("none running"), "a stopped worker's counters linger"


def _spool_a_batch_and_exit(spool: Path) -> None:
    from flocklog.pipeline.record import ExecutionRecord
    from flocklog.pipeline.spool import SpoolTransport

    SpoolTransport(spool).send([ExecutionRecord.create(20, "left behind", "t", i=i) for i in range(5)])


def test_each_failed_adoption_is_counted_in_stats_and_warned_on_the_flocklog_logger(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import multiprocessing

    from flocklog.pipeline._adopter import SpoolAdopter, stats_path

    spool = tmp_path / "spool"
    child = multiprocessing.get_context("spawn").Process(target=_spool_a_batch_and_exit, args=(spool,))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0 and _spooled_records(spool) == 5  # a spool of a process that is gone
    adopter = SpoolAdopter(spool, f"redis://127.0.0.1:{free_port()}/0", interval=0.05)  # nothing listens there
    with caplog.at_level(logging.WARNING, logger="flocklog"):
        adopter.start()
        try:
            assert wait_until(lambda: adopter.stats()["failures"] >= 2, 120), adopter.stats()
            published = json.loads(stats_path(spool, os.getpid()).read_text())
        finally:
            adopter.stop()
    stats = adopter.stats()
    assert "broker unreachable" in str(stats["last_error"]) and stats["last_error_at"], stats
    assert stats["records_replayed"] == stats["adopted_spools"] == stats["adoptions"] == 0, stats
    assert published["failures"] >= 1 and "broker unreachable" in published["last_error"], published
    warned = [r for r in caplog.records if r.name == "flocklog" and "spool adoption from" in r.getMessage()]
    assert len(warned) >= 2 and all(r.levelno == logging.WARNING for r in warned)
    assert _spooled_records(spool) == 5, "a failed adoption leaves the batches in the spool"
    assert not stats_path(spool, os.getpid()).exists(), "the counters file goes with its worker"


def test_the_counters_file_in_a_shared_directory_follows_no_planted_symlink_and_trusts_no_other_users_file(
    tmp_path: Path,
) -> None:
    """``FLOCKLOG_SPOOL_DIR=/tmp/x`` puts the counters beside it, in a directory every user can write to.

    Another user can guess the worker's pid: a symlink planted at a fixed temp name must not make the worker
    overwrite the file it points at, and a counters file that user planted must not show up in ``status``.
    """
    from flocklog.pipeline._adopter import SpoolAdopter, adopter_status, stats_path

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    spool = shared / "spool"
    spool.mkdir()
    victim = tmp_path / "victim.conf"
    victim.write_text("keep me\n")
    planted = stats_path(spool, os.getpid())
    planted.with_name(planted.name + ".tmp").symlink_to(victim)  # the name the worker used to write through
    adopter = SpoolAdopter(spool, f"redis://127.0.0.1:{free_port()}/0", interval=3600)
    adopter.start()
    try:
        assert victim.read_text() == "keep me\n", "the worker wrote through a planted symlink"
        assert json.loads(planted.read_text())["pid"] == os.getpid()
        assert adopter_status(spool)["adopter"] == f"running in pid {os.getpid()}"
    finally:
        adopter.stop()
    if os.geteuid() != 0:
        return  # planting a file owned by another user needs root here
    fake = stats_path(spool, os.getppid())  # a live pid, as a forged file would name
    fake.write_text(json.dumps({"pid": os.getppid(), "failures": 99}))
    os.chown(fake, 65534, 65534)
    assert adopter_status(spool) == {"adopter": "none running on this spool directory"}
