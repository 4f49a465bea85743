"""Every deployment under load, across size rotations, with one worker SIGKILLed mid-run and respawned by its master.

``flocklog verify`` with per-writer expectations (the receipts the client got) must find every receipted record
once, nothing torn and one rotation per boundary; on the stdlib's ``RotatingFileHandler`` in the same deployment
it must fail. The script is :func:`kill_helpers.run_kill_scenario`.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from contrib_helpers import EXAMPLES, Server, free_port, wait_for_port, wait_for_workers, wait_until
from kill_helpers import (
    CONTRIB_TESTS,
    MAX_BYTES,
    WAIT,
    CeleryLoad,
    HttpLoad,
    assert_nothing_lost,
    assert_stdlib_fails,
    run_kill_scenario,
)

pytestmark = pytest.mark.slow

UWSGI = str(Path(sys.executable).with_name("uwsgi"))


def _env(subprocess_env: dict[str, str], **extra: str) -> dict[str, str]:
    env = dict(subprocess_env, **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(CONTRIB_TESTS), env["PYTHONPATH"]])
    return env


def _gunicorn(
    tmp_path: Path, env: dict[str, str], start_server: Callable[..., Server], *, stdlib: bool, threads: bool
) -> tuple[Server, Path, int]:
    """The example's gunicorn.conf.py (hub in the master, size rotation), or plain gunicorn and the stdlib's handler."""
    app_dir = tmp_path / "gunicorn_app"
    if stdlib:  # not beside the example's gunicorn.conf.py, which gunicorn would read by default
        (app_dir / "logs").mkdir(parents=True)
    else:
        shutil.copytree(EXAMPLES / "gunicorn_app", app_dir)
        (app_dir / "logs").mkdir()
    log_file = app_dir / "logs" / "app.log"
    port = free_port()
    args = [sys.executable, "-m", "gunicorn"]
    if stdlib:
        env = dict(env, STAMPED_APP_STDLIB=f"{log_file}:{MAX_BYTES}")
        args += ["--workers", "4", "--bind", f"127.0.0.1:{port}"]
    else:
        env = dict(env, BIND=f"127.0.0.1:{port}", LOG_WHEN="none", LOG_MAX_BYTES=str(MAX_BYTES), LOG_BACKUPS="1000")
        args += ["-c", "gunicorn.conf.py"]
    if threads:
        args += ["--worker-class", "gthread", "--threads", "4"]
    server = start_server([*args, "stamped_app:wsgi_app"], cwd=app_dir, env=env, log=tmp_path / "gunicorn.out")
    wait_for_port(port, server)
    wait_until(lambda: server.output().count("Booting worker with pid") >= 4, WAIT, "4 workers", server.output)
    return server, log_file, port


@pytest.mark.parametrize("threads", [False, True], ids=["sync", "gthread"])
def test_gunicorn_loses_nothing_when_a_worker_is_sigkilled_across_size_rotations(
    threads: bool, tmp_path: Path, run_id: str, subprocess_env: dict[str, str], start_server: Callable[..., Server]
) -> None:
    server, log_file, port = _gunicorn(tmp_path, _env(subprocess_env), start_server, stdlib=False, threads=threads)
    outcome = run_kill_scenario(server, log_file, run_id, HttpLoad(port, run_id))
    assert_nothing_lost(outcome)


def test_verify_fails_the_stdlib_handlers_set_from_the_same_gunicorn_run(
    tmp_path: Path, run_id: str, subprocess_env: dict[str, str], start_server: Callable[..., Server]
) -> None:
    server, log_file, port = _gunicorn(tmp_path, _env(subprocess_env), start_server, stdlib=True, threads=False)
    assert_stdlib_fails(run_kill_scenario(server, log_file, run_id, HttpLoad(port, run_id)))


UWSGI_MODULE = textwrap.dedent(
    """
    # examples/uwsgi_django/uwsgi_django/wsgi.py, with the stamped test application instead of Django's.
    import os

    from flocklog.contrib.uwsgi import install
    from stamped_app import wsgi_app as application

    install(mode="files", log_file="logs/app.log", when=None, max_bytes=int(os.environ["LOG_MAX_BYTES"]),
            backup_count=1000)
    """
)


@pytest.mark.parametrize("lazy", [False, True], ids=["preforked-app", "lazy-apps"])
def test_uwsgi_loses_nothing_when_a_worker_is_sigkilled_across_size_rotations(
    lazy: bool, tmp_path: Path, run_id: str, subprocess_env: dict[str, str], start_server: Callable[..., Server]
) -> None:
    if not Path(UWSGI).exists():
        pytest.skip("uWSGI is not installed (pip install 'flocklog[uwsgi]')")
    project = tmp_path / "project"
    (project / "logs").mkdir(parents=True)
    (project / "stamped_uwsgi.py").write_text(UWSGI_MODULE)
    port = free_port()
    ini = (EXAMPLES / "uwsgi_django" / "uwsgi.ini").read_text()
    ini = ini.replace("uwsgi_django.wsgi:application", "stamped_uwsgi:application")
    ini = ini.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    ini += ("lazy-apps = true\n" if lazy else "") + f"virtualenv = {sys.prefix}\n"
    (project / "test.ini").write_text(ini)
    env = _env(subprocess_env, LOG_MAX_BYTES=str(MAX_BYTES))
    server = start_server([UWSGI, "--ini", "test.ini"], cwd=project, env=env, log=tmp_path / "uwsgi.out")
    wait_for_port(port, server)
    wait_until(lambda: server.output().count("spawned uWSGI worker") >= 4, WAIT, "4 workers", server.output)
    outcome = run_kill_scenario(server, project / "logs" / "app.log", run_id, HttpLoad(port, run_id))
    assert_nothing_lost(outcome)
    assert "killed by signal 9" in server.log.read_text("utf-8", errors="replace"), "uWSGI saw no SIGKILL"


@pytest.mark.parametrize("mode", ["hub", "files"])
def test_uvicorn_wrapper_loses_nothing_when_a_worker_is_sigkilled_across_size_rotations(
    mode: str, tmp_path: Path, run_id: str, subprocess_env: dict[str, str], start_server: Callable[..., Server]
) -> None:
    app_dir = tmp_path / "uvicorn_app"
    (app_dir / "logs").mkdir(parents=True)
    port = free_port()
    args = [sys.executable, "-m", "flocklog.contrib.uvicorn", "--log-file", "logs/app.log", "--when", "none"]
    args += ["--max-bytes", str(MAX_BYTES), "--backup-count", "1000", "--mode", mode, "--"]
    args += ["stamped_app:asgi_app", "--workers", "4", "--port", str(port), "--no-access-log"]
    server = start_server(args, cwd=app_dir, env=_env(subprocess_env), log=tmp_path / "uvicorn.out")
    wait_for_port(port, server)
    wait_for_workers(app_dir / "logs", "Application startup complete", 4, server, WAIT)
    outcome = run_kill_scenario(server, app_dir / "logs" / "app.log", run_id, HttpLoad(port, run_id))
    assert_nothing_lost(outcome)


CELERY_MODULE = textwrap.dedent(
    '''
    """Tasks of the SIGKILL test: each logs its records, then pushes its receipt (after they were written)."""
    import logging
    import logging.handlers
    import os

    import redis
    from celery import Celery
    from celery.utils.log import get_task_logger

    from flocklog.stamps import Stamp, StampFilter

    app = Celery("flk_kill", broker=os.environ["FLK_BROKER"])
    app.conf.update(task_ignore_result=True, broker_connection_retry_on_startup=True, worker_prefetch_multiplier=1)
    if os.environ.get("FLK_STDLIB"):
        # The set-up users start with: a RotatingFileHandler made at import, inherited by every prefork child.
        logger = logging.getLogger("flk.stdlib")
        logger.propagate = False
        handler = logging.handlers.RotatingFileHandler(
            os.environ["FLK_LOG_FILE"], maxBytes=int(os.environ["FLK_MAX_BYTES"]), backupCount=1000
        )
        handler.setFormatter(logging.Formatter("%(levelname)s %(asctime)s [PID:%(process)d] %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    else:
        from flocklog.contrib.celery import setup

        setup(app, mode=os.environ["FLK_MODE"], log_file=os.environ["FLK_LOG_FILE"], when=None,
              max_bytes=int(os.environ["FLK_MAX_BYTES"]), backup_count=1000)
        logger = get_task_logger("flk_kill")
    logger.addFilter(StampFilter())
    _receipts = redis.Redis.from_url(os.environ["FLK_BROKER"])


    def _delivered():
        return all(h.drain(30.0) for h in logging.getLogger().handlers if hasattr(h, "drain"))


    @app.task(name="flk.kill")
    def log_records(run, writer, records, size):
        for seq in range(records):
            logger.info(Stamp(run, writer, seq, "x" * size))
        if not _delivered():
            raise RuntimeError("records not delivered to the hub in 30 s")
        _receipts.rpush(f"receipts:{run}", writer)
    '''
)


@pytest.mark.redis
@pytest.mark.parametrize("mode", ["hub", "files", "stdlib"])
def test_celery_prefork_loses_nothing_when_a_child_is_sigkilled_across_size_rotations(
    mode: str,
    tmp_path: Path,
    redis_url: str,
    run_id: str,
    subprocess_env: dict[str, str],
    start_server: Callable[..., Server],
) -> None:
    """mode 'stdlib': the stdlib's RotatingFileHandler in the same deployment, which verify must fail."""
    stdlib = mode == "stdlib"
    (tmp_path / "flk_kill.py").write_text(CELERY_MODULE)
    (tmp_path / "logs").mkdir()
    log_file = tmp_path / "logs" / "celery.log"
    env = _env(subprocess_env, FLK_BROKER=redis_url, FLK_MODE=mode, FLK_LOG_FILE=str(log_file))
    env.update(FLK_MAX_BYTES=str(MAX_BYTES), FLK_STDLIB="1" if stdlib else "")
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    args = [sys.executable, "-m", "celery", "-A", "flk_kill", "worker", "--concurrency=4", "--pool=prefork"]
    args += ["--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat", "-O", "fair"]
    worker = start_server(args, cwd=tmp_path, env=env, log=tmp_path / "worker.out")

    def ready() -> bool:  # Celery says so on stderr, or (flocklog owning its logging) in the log file
        logged = log_file.read_text("utf-8", errors="replace") if log_file.exists() else ""
        return "ready." in worker.output() + logged or worker.proc.poll() is not None

    wait_until(ready, WAIT, "the worker to be ready", worker.output)
    outcome = run_kill_scenario(worker, log_file, run_id, CeleryLoad(redis_url, run_id))
    if stdlib:
        assert_stdlib_fails(outcome)
    else:
        assert_nothing_lost(outcome)
