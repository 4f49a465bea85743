"""gunicorn and uvicorn with 4 workers each: every request's record lands once in one rotating set."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from contrib_helpers import EXAMPLES, Server, free_port, hammer, wait_for_port

from flocklog.verify import VerifyOptions, verify_paths

pytestmark = pytest.mark.slow

REQUESTS = 2000


def verified(log_file: Path, run: str) -> None:
    report = verify_paths(
        [str(log_file)],
        VerifyOptions(expect_per_writer=1, writers=REQUESTS, run=run, when="S", tolerance=0.5),
    )
    assert report.ok, report.to_dict()
    assert report.records == REQUESTS
    assert report.archives >= 2, "the run must cross rotation boundaries to prove anything"


def pids_in(log_file: Path) -> set[str]:
    text = "".join(p.read_text() for p in log_file.parent.glob(log_file.name + "*") if not p.name.endswith(".lock"))
    lines = [line for line in text.splitlines() if "flk1" in line]
    assert all(line.count("[PID:") == 1 for line in lines), "each line must be formatted once, by its writer"
    return {line.split("[PID:")[1].split(",")[0] for line in lines}


def test_gunicorn_four_workers_log_every_request_once_through_the_masters_hub(
    tmp_path: Path, run_id: str, subprocess_env: dict[str, str], start_server: Callable[..., Server]
) -> None:
    app_dir = tmp_path / "gunicorn_app"
    shutil.copytree(EXAMPLES / "gunicorn_app", app_dir)
    (app_dir / "logs").mkdir()
    port = free_port()
    env = dict(subprocess_env, BIND=f"127.0.0.1:{port}", LOG_WHEN="S", LOG_BACKUPS="1000")
    args = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"]
    server = start_server(args, cwd=app_dir, env=env, log=tmp_path / "gunicorn.out")
    wait_for_port(port, server)
    started = time.monotonic()
    hammer(f"http://127.0.0.1:{port}/", run_id, REQUESTS)
    if time.monotonic() - started < 2.5:
        time.sleep(2.5)  # make sure the set spans several one-second intervals
        hammer(f"http://127.0.0.1:{port}/", "warmup", 10)
    assert server.terminate() == 0, server.output()
    verified(app_dir / "logs" / "app.log", run_id)
    assert len(pids_in(app_dir / "logs" / "app.log")) >= 2, "requests must have been served by several workers"


def test_uvicorn_four_spawned_workers_log_every_request_once_through_the_hub_address(
    tmp_path: Path, run_id: str, subprocess_env: dict[str, str], start_server: Callable[..., Server]
) -> None:
    app_dir = tmp_path / "uvicorn_app"
    shutil.copytree(EXAMPLES / "uvicorn_app", app_dir)
    (app_dir / "logs").mkdir()
    port = free_port()
    args = [sys.executable, "-m", "flocklog.contrib.uvicorn", "--log-file", "logs/app.log", "--when", "S"]
    args += ["--backup-count", "1000", "--", "app:app", "--workers", "4", "--port", str(port)]
    server = start_server(args, cwd=app_dir, env=subprocess_env, log=tmp_path / "uvicorn.out")
    wait_for_port(port, server)
    started = time.monotonic()
    hammer(f"http://127.0.0.1:{port}/", run_id, REQUESTS)
    if time.monotonic() - started < 2.5:
        time.sleep(2.5)
        hammer(f"http://127.0.0.1:{port}/", "warmup", 10)
    assert server.terminate() == 0, server.output()
    verified(app_dir / "logs" / "app.log", run_id)
    assert len(pids_in(app_dir / "logs" / "app.log")) >= 2, "requests must have been served by several workers"
