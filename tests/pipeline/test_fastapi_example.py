"""examples/fastapi_pipeline under real uvicorn, a real Celery worker, Redis and PostgreSQL: every request's
record is stored exactly once, including those still buffered when uvicorn is stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from pipeline_helpers import Worker, count_rows, drop_table, free_port, pipeline_env, wait_until

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_pipeline"
REQUESTS = 333  # not a multiple of the batch size: the last records are still buffered at SIGTERM


@pytest.mark.postgres
@pytest.mark.redis
def test_every_request_is_recorded_once_and_shutdown_flushes(tmp_path: Path, redis_url: str, postgres_dsn: str) -> None:
    table = f"flk_fastapi_{uuid.uuid4().hex[:8]}"
    env = pipeline_env(
        dict(os.environ),
        FLOCKLOG_BROKER_URL=redis_url,
        FLOCKLOG_DATABASE_URL=postgres_dsn,
        FLOCKLOG_TABLE=table,
        FLOCKLOG_SPOOL_DIR=str(tmp_path / "spool"),
    )
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(EXAMPLE)])
    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port), "--workers", "2"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "uvicorn.log", "wb"),  # noqa: SIM115  # the child owns it
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{url}/docs", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_until(up, timeout=30), (tmp_path / "uvicorn.log").read_text()
        with httpx.Client(base_url=url, timeout=10) as client:
            ids = {
                client.post(f"/orders/{i}", params={"amount": i / 2}).json()["execution_id"] for i in range(REQUESTS)
            }
        assert len(ids) == REQUESTS
        os.killpg(server.pid, signal.SIGTERM)  # the lifespan flushes what is still buffered
        server.wait(timeout=30)
        stored = wait_until(lambda: count_rows(postgres_dsn, table)[0] >= REQUESTS, timeout=60)
        assert stored and count_rows(postgres_dsn, table) == (REQUESTS, REQUESTS), (
            tmp_path / "worker.log"
        ).read_text()[-2000:]
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
        worker.stop()
        drop_table(postgres_dsn, table)
