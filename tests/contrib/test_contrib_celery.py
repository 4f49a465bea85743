"""Celery workers (prefork, 4 children, real Redis) log thousands of task records into one rotating set."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from contrib_helpers import Server, stamped_count, wait_until

from flocklog.stamps import parse_stamp
from flocklog.verify import VerifyOptions, verify_paths

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TASKS_MODULE = textwrap.dedent(
    '''
    """The tasks of the integration test: one stamped record per task, from the task logger or a plain one."""
    import logging
    import os
    import time

    from celery import Celery
    from celery.utils.log import get_task_logger

    from flocklog.contrib.celery import setup
    from flocklog.stamps import Stamp, StampFilter

    app = Celery("flk_tasks", broker=os.environ["FLK_BROKER"])
    app.conf.update(task_ignore_result=True, broker_connection_retry_on_startup=True, worker_prefetch_multiplier=1)
    setup(
        app,
        mode=os.environ["FLK_MODE"],
        log_file=os.environ["FLK_LOG_FILE"],
        when=os.environ.get("FLK_WHEN", "S"),  # "none": size only
        max_bytes=int(os.environ.get("FLK_MAX_BYTES", "0")),
        backup_count=1000,
        hub_address=os.environ.get("FLK_HUB_ADDRESS") or None,
    )
    task_logger = get_task_logger("flk_tasks")
    task_logger.addFilter(StampFilter())
    plain_logger = logging.getLogger("flk.plain")
    plain_logger.addFilter(StampFilter())


    @app.task(name="flk.log")
    def log(run, index, records=1, pause=0.0, work=0.004, receipts=None):
        logger = task_logger if index % 2 == 0 else plain_logger
        time.sleep(work)  # some work, so 2,000 tasks span several rotation intervals
        for seq in range(records):
            if seq:
                time.sleep(pause)
            logger.info(Stamp(run, f"t{index}", seq, "p" * 40))
            if receipts:
                # Outside the log: proof that this logging call returned, for the shutdown tests.
                _receipts(receipts).rpush(run, f"t{index}:{seq}")


    _clients = {}


    def _receipts(url):
        import redis

        if url not in _clients:
            _clients[url] = redis.Redis.from_url(url)
        return _clients[url]
    '''
)


def start_worker(
    tmp_path: Path,
    env: dict[str, str],
    start_server: Callable[..., Server],
    *,
    mode: str,
    broker: str,
    pool: str = "prefork",
) -> tuple[Server, Path]:
    (tmp_path / "flk_tasks.py").write_text(TASKS_MODULE)
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    env = dict(env)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    env.update(FLK_BROKER=broker, FLK_MODE=mode, FLK_LOG_FILE=str(logs / "celery.log"))
    args = [sys.executable, "-m", "celery", "-A", "flk_tasks", "worker", "--concurrency=4", f"--pool={pool}"]
    args += ["--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    worker = start_server(args, cwd=tmp_path, env=env, log=tmp_path / "worker.out")
    return worker, logs


def send(broker: str, run: str, count: int, **kwargs: object) -> None:
    from celery import Celery

    client = Celery("flk_client", broker=broker)
    with client.connection_for_write() as conn:
        producer = client.amqp.Producer(conn)
        for index in range(count):
            client.send_task("flk.log", args=[run, index], kwargs=kwargs, producer=producer)


@pytest.mark.parametrize(
    ("mode", "pool"), [("hub", "prefork"), ("files", "prefork"), ("hub", "threads"), ("hub", "solo")]
)
def test_worker_logs_every_task_record_once_across_rotations(
    mode: str,
    pool: str,
    tmp_path: Path,
    redis_url: str,
    run_id: str,
    subprocess_env: dict[str, str],
    start_server: Callable[..., Server],
) -> None:
    tasks = 2000
    worker, logs = start_worker(tmp_path, subprocess_env, start_server, mode=mode, broker=redis_url, pool=pool)
    send(redis_url, run_id, tasks)
    wait_until(
        lambda: stamped_count(logs, run_id) >= tasks or worker.proc.poll() is not None,
        180,
        f"{tasks} task records",
        worker.output,
    )
    assert worker.terminate() == 0, worker.output()
    report = verify_paths(
        [str(logs / "celery.log")],
        VerifyOptions(expect_per_writer=1, writers=tasks, run=run_id, when="S", tolerance=0.5),
    )
    assert report.ok, report.to_dict()
    assert report.records == tasks
    assert report.archives >= 2, "the test must cross rotation boundaries to prove anything"


def test_warm_shutdown_loses_no_record_of_tasks_in_flight(
    tmp_path: Path,
    redis_url: str,
    run_id: str,
    subprocess_env: dict[str, str],
    start_server: Callable[..., Server],
) -> None:
    worker, logs = start_worker(tmp_path, subprocess_env, start_server, mode="hub", broker=redis_url)
    # Each task logs, sleeps, logs again: a SIGTERM lands while four tasks are between their two records.
    send(redis_url, run_id, 200, records=2, pause=0.3)
    wait_until(lambda: stamped_count(logs, run_id) >= 10, 90, "the first task records", worker.output)
    seen_before = stamped_count(logs, run_id)
    assert worker.terminate() == 0, worker.output()
    report = verify_paths(
        [str(logs / "celery.log")], VerifyOptions(expect_per_writer=2, run=run_id, when="S", tolerance=0.5)
    )
    # Warm shutdown lets in-flight tasks finish: every task that logged its first record logged its second.
    assert report.ok, report.to_dict()
    assert report.records >= seen_before
    assert 5 <= len(report.writers) < 200, "SIGTERM must land while tasks are still queued"


def test_cold_shutdown_keeps_every_record_whose_logging_call_returned(
    tmp_path: Path,
    redis_url: str,
    run_id: str,
    subprocess_env: dict[str, str],
    start_server: Callable[..., Server],
) -> None:
    import redis

    worker, logs = start_worker(tmp_path, subprocess_env, start_server, mode="hub", broker=redis_url)
    send(redis_url, run_id, 200, records=3, pause=0.2, receipts=redis_url)
    wait_until(lambda: stamped_count(logs, run_id) >= 10, 90, "the first task records", worker.output)
    # SIGQUIT is Celery's cold shutdown: tasks in flight are terminated between two records.
    worker.proc.send_signal(signal.SIGQUIT)
    worker.proc.wait(60)
    receipts = {item.decode() for item in redis.Redis.from_url(redis_url).lrange(run_id, 0, -1)}
    found: list[str] = []
    for path in logs.glob("celery.log*"):
        if path.name.endswith(".lock"):
            continue
        for line in path.read_text().splitlines():
            stamp = parse_stamp(line)
            if stamp is not None and stamp.run == run_id:
                found.append(f"{stamp.writer}:{stamp.seq}")
    assert len(receipts) >= 10
    assert receipts <= set(found), f"lost: {sorted(receipts - set(found))[:20]}\n{worker.output()}"
    assert len(found) == len(set(found)), "a record was written twice"
    per_writer = Counter(item.split(":")[0] for item in found)
    assert any(count < 3 for count in per_writer.values()), "the cold shutdown must cut tasks in flight"
