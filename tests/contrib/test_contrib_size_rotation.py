"""Size-only rotation (``when=None, max_bytes=...``) through every integration, each under a real server."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from contrib_helpers import (
    EXAMPLES,
    Server,
    free_port,
    hammer,
    stamped_count,
    wait_for_port,
    wait_for_workers,
    wait_until,
)

from flocklog.verify import VerifyOptions, verify_paths

pytestmark = pytest.mark.slow

REQUESTS = 600
MAX_BYTES = 8000  # ~60 records a file: a run crosses several size boundaries


def size_verified(log_file: Path, run: str, writers: int, output: str) -> None:
    """Every record once, nothing torn, and archives ``.1`` ... that the size boundaries made."""
    report = verify_paths([str(log_file)], VerifyOptions(expect_per_writer=1, writers=writers, run=run))
    assert report.ok, (report.to_dict(), output)
    assert report.records == writers
    archives = [
        p for p in log_file.parent.iterdir() if p.name.startswith(log_file.name + ".") and p.suffix[1:].isdigit()
    ]
    assert len(archives) >= 2, f"size rotation must have made archives: {sorted(log_file.parent.iterdir())}"
    assert report.archives >= 2


def test_gunicorn_hooks_rotate_by_size_only(
    tmp_path: Path, run_id: str, subprocess_env: dict[str, str], start_server: Callable[..., Server]
) -> None:
    app_dir = tmp_path / "gunicorn_app"
    shutil.copytree(EXAMPLES / "gunicorn_app", app_dir)
    (app_dir / "logs").mkdir()
    port = free_port()
    env = dict(subprocess_env, BIND=f"127.0.0.1:{port}", LOG_WHEN="none", LOG_MAX_BYTES=str(MAX_BYTES))
    env["LOG_BACKUPS"] = "1000"
    args = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"]
    server = start_server(args, cwd=app_dir, env=env, log=tmp_path / "gunicorn.out")
    wait_for_port(port, server)
    hammer(f"http://127.0.0.1:{port}/", run_id, REQUESTS)
    assert server.terminate() == 0, server.output()
    size_verified(app_dir / "logs" / "app.log", run_id, REQUESTS, server.output())


def test_uvicorn_wrapper_rotates_by_size_only(
    tmp_path: Path, run_id: str, subprocess_env: dict[str, str], start_server: Callable[..., Server]
) -> None:
    app_dir = tmp_path / "uvicorn_app"
    shutil.copytree(EXAMPLES / "uvicorn_app", app_dir)
    (app_dir / "logs").mkdir()
    port = free_port()
    args = [sys.executable, "-m", "flocklog.contrib.uvicorn", "--log-file", "logs/app.log", "--when", "none"]
    args += ["--max-bytes", str(MAX_BYTES), "--backup-count", "1000", "--max-age", "86400"]
    args += ["--", "app:app", "--workers", "2", "--port", str(port)]
    server = start_server(args, cwd=app_dir, env=subprocess_env, log=tmp_path / "uvicorn.out")
    wait_for_port(port, server)
    wait_for_workers(app_dir / "logs", "Application startup complete", 2, server)
    hammer(f"http://127.0.0.1:{port}/", run_id, REQUESTS)
    assert server.terminate() == 0, server.output()
    size_verified(app_dir / "logs" / "app.log", run_id, REQUESTS, server.output())


@pytest.mark.redis
@pytest.mark.parametrize("mode", ["hub", "files"])
def test_celery_setup_rotates_by_size_only(
    mode: str,
    tmp_path: Path,
    redis_url: str,
    run_id: str,
    subprocess_env: dict[str, str],
    start_server: Callable[..., Server],
) -> None:
    from test_contrib_celery import send, start_worker

    env = dict(subprocess_env, FLK_WHEN="none", FLK_MAX_BYTES=str(MAX_BYTES))
    worker, logs = start_worker(tmp_path, env, start_server, mode=mode, broker=redis_url)
    send(redis_url, run_id, REQUESTS)
    wait_until(
        lambda: stamped_count(logs, run_id) >= REQUESTS or worker.proc.poll() is not None,
        180,
        f"{REQUESTS} task records",
        worker.output,
    )
    assert worker.terminate() == 0, worker.output()
    size_verified(logs / "celery.log", run_id, REQUESTS, worker.output())


def test_django_flocklog_setting_rotates_by_size_only(
    tmp_path: Path, run_id: str, subprocess_env: dict[str, str]
) -> None:
    project = tmp_path / "django_celery"
    shutil.copytree(EXAMPLES / "django_celery", project)
    settings = project / "myproject" / "settings.py"
    flocklog_setting = (
        '{"MODE": "files", "LOG_FILE": BASE_DIR / "logs" / "app.log", "WHEN": None, '
        f'"MAX_BYTES": {MAX_BYTES}, "BACKUP_COUNT": 1000, "MAX_AGE": 86400}}'
    )
    settings.write_text(settings.read_text() + f"\nFLOCKLOG = {flocklog_setting}\n")
    code = (
        "import logging\n"
        "from flocklog.stamps import StampFilter, write_stamped\n"
        "log = logging.getLogger('myapp.views')\n"
        "log.addFilter(StampFilter())\n"
        f"write_stamped(log, run={run_id!r}, writer='w0', count={REQUESTS})\n"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=project,
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    log_file = project / "logs" / "app.log"
    report = verify_paths([str(log_file)], VerifyOptions(expect_per_writer=REQUESTS, writers=1, run=run_id))
    assert report.ok, report.to_dict()
    assert report.archives >= 2
