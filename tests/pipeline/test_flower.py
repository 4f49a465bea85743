"""Flower against the pipeline's Celery app: the documented command shows the worker and its batch tasks."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from pipeline_helpers import free_port, pipeline_env, wait_until

from flocklog import ExecutionLogger
from flocklog.pipeline.transports import CELERY_APP, worker_command

pytestmark = [pytest.mark.redis]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=out, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_flower_shows_the_worker_and_the_batches_it_wrote(tmp_path: Path, redis_url: str) -> None:
    pytest.importorskip("flower", reason="flower is in the dev extra")
    env = pipeline_env(
        dict(os.environ),
        FLOCKLOG_BROKER_URL=redis_url,
        FLOCKLOG_DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite'}",
        FLOCKLOG_SPOOL_DIR=str(tmp_path / "spool"),
        FLOWER_UNAUTHENTICATED_API="true",
    )
    port = free_port()
    name = f"flower-test-{port}@localhost"
    worker = _start(worker_command("-E", "-n", name, "--concurrency", "1", "-l", "info"), env, tmp_path / "w.log")
    flower_cmd = [sys.executable, "-m", "celery", "-A", CELERY_APP, "flower", "--address=127.0.0.1", f"--port={port}"]
    flower = _start(flower_cmd, env, tmp_path / "flower.log")
    try:
        base = f"http://127.0.0.1:{port}"

        def worker_listed() -> bool:
            with contextlib.suppress(OSError, ValueError):
                return name in _get(f"{base}/api/workers?refresh=1")
            return False

        assert wait_until(worker_listed, timeout=60, interval=1), (tmp_path / "flower.log").read_text()[-3000:]
        logger = ExecutionLogger("flower", transport="celery", broker_url=redis_url, spool_dir=tmp_path / "spool")
        for i in range(120):
            logger.info("charged", i=i)
        logger.close(timeout=60)

        def batches() -> list[dict[str, Any]]:
            with contextlib.suppress(OSError, ValueError):
                tasks = _get(f"{base}/api/tasks?taskname=flocklog.write_batch")
                return [t for t in tasks.values() if t.get("state") == "SUCCESS"]
            return []

        assert wait_until(lambda: sum(int(t["result"]) for t in batches()) == 120, timeout=60, interval=1)
        assert all(t["args"].startswith("[<") and "execution records>]" in t["args"] for t in batches())
    finally:
        _stop(flower)
        _stop(worker)
