"""gunicorn with 4 workers, the OTLP sink in the master's hub: a killed worker and a collector outage lose nothing.

The workers log through the hub the master owns (flocklog's gunicorn hooks with a ``logging_config`` naming
``OTLPHandler``), so no worker holds an exporter: one is SIGKILLed and replaced, the receiver is stopped for 10 s,
and every request's record still arrives exactly once, with the pid of the worker that served it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
from sinkhelpers import check_exactly_once, wait_for

pytest.importorskip("gunicorn", reason="the gunicorn extra is not installed")
pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed (pip install 'flocklog[otel]')")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "contrib"))  # the web-server helpers live there
from contrib_helpers import EXAMPLES, Server, free_port, hammer, pid_of, wait_for_port
from otlpreceiver import Receiver

pytestmark = pytest.mark.slow
REQUESTS = 400  # per phase: before the kill, during the outage, after it
OUTAGE = 10.0

CONF = """
import json, os
from flocklog.contrib.gunicorn import hooks

bind = os.environ["BIND"]
workers = 4
accesslog = None
_flocklog = hooks(log_file=None, logging_config=json.loads(os.environ["HUB_CONFIG"]))
on_starting, post_fork = _flocklog.on_starting, _flocklog.post_fork
worker_exit, on_exit = _flocklog.worker_exit, _flocklog.on_exit
"""


def booted(server: Server) -> list[int]:
    return [int(p) for p in re.findall(r"Booting worker with pid: (\d+)", server.output())]


def test_gunicorn_workers_reach_the_collector_once_through_a_killed_worker_and_an_outage(
    tmp_path: Path, run_id: str, subprocess_env: dict[str, str]
) -> None:
    receiver = Receiver("http")
    receiver.start()
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    shutil.copy(EXAMPLES / "gunicorn_app" / "app.py", app_dir / "app.py")
    (app_dir / "gunicorn.conf.py").write_text(CONF)
    hub_config = {
        "version": 1,
        "handlers": {
            "otlp": {
                "class": "flocklog.hub.sinks.OTLPHandler",
                "endpoint": receiver.endpoint,
                "service_name": "gunicorn-test",
                "retry_interval": 0.2,
                "max_retry_interval": 1.0,
                "drain_timeout": 60,
                "spool_dir": str(tmp_path / "sink"),
            }
        },
        "root": {"level": "INFO", "handlers": ["otlp"]},
    }
    port = free_port()
    env = dict(subprocess_env, BIND=f"127.0.0.1:{port}", HUB_CONFIG=json.dumps(hub_config))
    args = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"]
    server = Server(args, cwd=app_dir, env=env, log=tmp_path / "gunicorn.out")
    runs = [f"{run_id}a", f"{run_id}b", f"{run_id}c"]
    try:
        wait_for_port(port, server)
        wait_for(lambda: len(booted(server)) >= 4, 60, "gunicorn to boot 4 workers")
        url = f"http://127.0.0.1:{port}/"
        hammer(url, runs[0], REQUESTS)
        wait_for(lambda: receiver.count(runs[0]) >= REQUESTS, 120, "the first phase at the receiver")
        served = {int(pid_of(r["body"])) for r in receiver.snapshot() if f" {runs[0]} " in str(r["body"])}
        victim = next(pid for pid in booted(server) if pid in served)  # a worker that has logged
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(booted(server)) >= 5, 60, "gunicorn to replace the killed worker")
        receiver.stop()
        hammer(url, runs[1], REQUESTS)  # served while the collector is down: spooled by the master's sink
        time.sleep(OUTAGE)  # the deliberate outage, not a synchronisation
        receiver.start()
        hammer(url, runs[2], REQUESTS)
        for run in runs:
            wait_for(lambda run=run: receiver.count(run) >= REQUESTS, 120, f"every record of {run}")
        assert server.terminate() == 0, server.output()
    finally:
        server.kill()
        receiver.stop()
    records = receiver.snapshot()
    for run in runs:
        mine = [r for r in records if f" {run} " in str(r["body"])]
        check_exactly_once((r["body"] for r in mine), run=run, writers={f"r{i}": 1 for i in range(REQUESTS)})
    stamped = [r for r in records if run_id in str(r["body"])]
    pids = {int(pid_of(r["body"])) for r in stamped}
    assert len(pids) >= 2, "requests must have been served by several workers"
    assert victim not in {int(pid_of(r["body"])) for r in stamped if f" {runs[2]} " in r["body"]}
    for r in stamped:
        assert r["attrs"]["process.pid"] == int(pid_of(r["body"]))  # the worker's pid, not the master's
        assert r["resource"]["service.name"] == "gunicorn-test"
        assert r["attrs"]["logger.name"] == "gunicorn_app"
