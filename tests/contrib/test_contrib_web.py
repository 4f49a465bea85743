"""gunicorn and uvicorn with 4 workers each: every request's record lands once in one rotating set."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from contrib_helpers import (
    EXAMPLES,
    Server,
    free_port,
    hammer_across_boundaries,
    pid_of,
    wait_for_port,
    wait_for_workers,
    wait_until,
)

from flocklog.verify import VerifyOptions, verify_paths

pytestmark = pytest.mark.slow

REQUESTS = 2000


def verified(log_file: Path, run: str, server: Server, requests: int = REQUESTS) -> None:
    report = verify_paths(
        [str(log_file)],
        VerifyOptions(expect_per_writer=1, writers=requests, run=run, when="S", tolerance=0.5),
    )
    assert report.ok, (report.to_dict(), server.output())
    assert report.records == requests
    assert report.archives >= 2, "the run must cross rotation boundaries to prove anything"


def pids_in(log_file: Path) -> set[str]:
    text = "".join(p.read_text() for p in log_file.parent.glob(log_file.name + "*") if not p.name.endswith(".lock"))
    lines = [line for line in text.splitlines() if "flk1" in line]
    assert all(line.count("[PID:") == 1 for line in lines), "each line must be formatted once, by its writer"
    return {pid_of(line) for line in lines}


def _booted(server: Server) -> int:
    """Workers gunicorn has started (it says so on stderr): the port answers as soon as the master binds it."""
    return server.log.read_text("utf-8", errors="replace").count("Booting worker with pid")


@pytest.mark.parametrize("preload", [False, True], ids=["lazy-app", "preload"])
def test_gunicorn_four_workers_log_every_request_once_through_the_masters_hub(
    preload: bool, tmp_path: Path, run_id: str, subprocess_env: dict[str, str], start_server: Callable[..., Server]
) -> None:
    app_dir = tmp_path / "gunicorn_app"
    shutil.copytree(EXAMPLES / "gunicorn_app", app_dir)
    (app_dir / "logs").mkdir()
    port = free_port()
    env = dict(subprocess_env, BIND=f"127.0.0.1:{port}", LOG_WHEN="S", LOG_BACKUPS="1000")
    args = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", *(["--preload"] if preload else []), "app:app"]
    server = start_server(args, cwd=app_dir, env=env, log=tmp_path / "gunicorn.out")
    wait_for_port(port, server)
    wait_until(lambda: _booted(server) >= 4, 60, "gunicorn to boot 4 workers", server.output)
    hammer_across_boundaries(f"http://127.0.0.1:{port}/", run_id, REQUESTS)
    assert server.terminate() == 0, server.output()
    verified(app_dir / "logs" / "app.log", run_id, server)
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
    wait_for_workers(app_dir / "logs", "Application startup complete", 4, server)
    hammer_across_boundaries(f"http://127.0.0.1:{port}/", run_id, REQUESTS)
    assert server.terminate() == 0, server.output()
    verified(app_dir / "logs" / "app.log", run_id, server)
    assert len(pids_in(app_dir / "logs" / "app.log")) >= 2, "requests must have been served by several workers"


def test_uvicorn_workers_reach_a_flocklog_serve_hub_through_log_config_and_the_address_variable(
    tmp_path: Path, run_id: str, subprocess_env: dict[str, str], start_server: Callable[..., Server]
) -> None:
    from flocklog.contrib.uvicorn import log_config

    app_dir = tmp_path / "uvicorn_app"
    shutil.copytree(EXAMPLES / "uvicorn_app", app_dir)
    (app_dir / "logs").mkdir()
    hub_config = {
        "version": 1,
        "handlers": {
            "file": {
                "class": "flocklog.TimedRotatingFileHandler",
                "filename": str(app_dir / "logs" / "app.log"),
                "when": "S",
                "backupCount": 1000,
            }
        },
        "root": {"handlers": ["file"]},
    }
    (tmp_path / "hub.json").write_text(json.dumps(hub_config))
    (tmp_path / "log.json").write_text(json.dumps(log_config()))
    socket_path = tmp_path / "hub.sock"
    hub_args = [
        sys.executable,
        "-c",
        "from flocklog.cli import main; main()",
        "serve",
        "--config",
        str(tmp_path / "hub.json"),
    ]
    hub = start_server(
        [*hub_args, "--unix", str(socket_path)], cwd=tmp_path, env=subprocess_env, log=tmp_path / "hub.out"
    )
    wait_until(lambda: socket_path.exists() or hub.proc.poll() is not None, 30, "the hub's socket", hub.output)
    port = free_port()
    env = dict(subprocess_env, FLOCKLOG_HUB_ADDRESS=f"unix:{socket_path}")
    args = [sys.executable, "-m", "uvicorn", "app:app", "--workers", "4", "--port", str(port)]
    server = start_server(
        [*args, "--log-config", str(tmp_path / "log.json")], cwd=app_dir, env=env, log=tmp_path / "uvicorn.out"
    )
    wait_for_port(port, server)
    wait_for_workers(app_dir / "logs", "Application startup complete", 4, server)
    hammer_across_boundaries(f"http://127.0.0.1:{port}/", run_id, 600)
    assert server.terminate() == 0, server.output()
    assert hub.terminate() == 0, hub.output()
    report = verify_paths(
        [str(app_dir / "logs" / "app.log")],
        VerifyOptions(expect_per_writer=1, writers=600, run=run_id, when="S", tolerance=0.5),
    )
    assert report.ok, report.to_dict()
    assert report.archives >= 1
    assert len(pids_in(app_dir / "logs" / "app.log")) >= 2
