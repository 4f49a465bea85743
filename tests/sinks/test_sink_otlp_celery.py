"""A Celery prefork worker (4 children, real Redis) exporting through the OTLP sink of the hub its main process owns.

No child holds an exporter: one is SIGKILLed between two phases (Celery replaces it), the collector is stopped for
10 s while tasks run, and every task's record arrives exactly once with the pid of the child that ran it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sinkhelpers import check_exactly_once, wait_for

pytest.importorskip("celery", reason="the celery extra is not installed")
pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed (pip install 'flocklog[otel]')")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "contrib"))  # the server helpers live there
from contrib_helpers import Server
from otlpreceiver import Receiver

pytestmark = [pytest.mark.redis, pytest.mark.slow]
TASKS = 300  # per phase: before the kill, during the outage, after it
OUTAGE = 10.0

TASKS_MODULE = textwrap.dedent(
    """
    import json
    import logging
    import os

    from celery import Celery

    from flocklog.contrib.celery import setup
    from flocklog.stamps import Stamp, StampFilter

    app = Celery("flk_otel", broker=os.environ["FLK_BROKER"])
    app.conf.update(task_ignore_result=True, broker_connection_retry_on_startup=True, worker_prefetch_multiplier=1)
    setup(app, mode="hub", log_file=None, logging_config=json.loads(os.environ["FLK_HUB_CONFIG"]))
    logger = logging.getLogger("flk.otel")
    logger.addFilter(StampFilter())


    @app.task(name="flk.otel.log")
    def log(run, index):
        logger.info(Stamp(run, f"t{index}", 0))
    """
)


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def send(broker: str, run: str, count: int) -> None:
    from celery import Celery

    client = Celery("flk_client", broker=broker)
    with client.connection_for_write() as conn:
        producer = client.amqp.Producer(conn)
        for index in range(count):
            client.send_task("flk.otel.log", args=[run, index], producer=producer)


def test_celery_prefork_children_reach_the_collector_once_through_a_killed_child_and_an_outage(
    tmp_path: Path, run_id: str, subprocess_env: dict[str, str], redis_url: str
) -> None:
    receiver = Receiver("http")
    receiver.start()
    hub_config = {
        "version": 1,
        "handlers": {
            "otlp": {
                "class": "flocklog.hub.sinks.OTLPHandler",
                "endpoint": receiver.endpoint,
                "service_name": "celery-test",
                "retry_interval": 0.2,
                "max_retry_interval": 1.0,
                "drain_timeout": 60,
                "spool_dir": str(tmp_path / "sink"),
            }
        },
        "root": {"level": "INFO", "handlers": ["otlp"]},
    }
    (tmp_path / "flk_otel.py").write_text(TASKS_MODULE)
    env = dict(subprocess_env, FLK_BROKER=redis_url, FLK_HUB_CONFIG=json.dumps(hub_config))
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    args = [sys.executable, "-m", "celery", "-A", "flk_otel", "worker", "--concurrency=4", "--pool=prefork"]
    args += ["--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    worker = Server(args, cwd=tmp_path, env=env, log=tmp_path / "worker.out")
    runs = [f"{run_id}a", f"{run_id}b", f"{run_id}c"]
    try:
        wait_for(lambda: len(children(worker.proc.pid)) >= 4, 90, "4 prefork children")
        send(redis_url, runs[0], TASKS)
        wait_for(lambda: receiver.count(runs[0]) >= TASKS, 120, "the first phase at the receiver")
        before = children(worker.proc.pid)
        victim = before[0]
        os.kill(victim, signal.SIGKILL)  # idle: its records were already exported
        wait_for(lambda: len(set(children(worker.proc.pid)) - set(before)) >= 1, 90, "a replacement child")
        receiver.stop()
        send(redis_url, runs[1], TASKS)
        time.sleep(OUTAGE)  # the deliberate outage, not a synchronisation
        receiver.start()
        send(redis_url, runs[2], TASKS)
        for run in runs:
            wait_for(lambda run=run: receiver.count(run) >= TASKS, 120, f"every record of {run}")
        assert worker.terminate() == 0, worker.output()
    finally:
        worker.kill()
        receiver.stop()
    records = receiver.snapshot()
    for run in runs:
        mine = [r for r in records if f" {run} " in str(r["body"])]
        check_exactly_once((r["body"] for r in mine), run=run, writers={f"t{i}": 1 for i in range(TASKS)})
    stamped = [r for r in records if run_id in str(r["body"])]
    pids = {r["attrs"]["process.pid"] for r in stamped}
    assert len(pids) >= 2 and worker.proc.pid not in pids, pids  # the children's pids, not the main process's
    assert all(r["resource"]["service.name"] == "celery-test" for r in stamped)
