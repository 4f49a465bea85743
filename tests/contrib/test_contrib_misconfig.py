"""Misconfiguration stops a server at start-up with one line saying what to do, never a deep traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from contrib_helpers import EXAMPLES
from test_contrib_celery import TASKS_MODULE

from flocklog.errors import ConfigError

pytestmark = pytest.mark.slow


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=90)


def assert_one_clear_line(result: subprocess.CompletedProcess[str], expected: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    errors = [line for line in result.stderr.splitlines() if line.startswith("flocklog: error:")]
    assert len(errors) == 1, output
    assert expected in errors[0], output
    assert "Traceback" not in output, output


def celery_worker(tmp_path: Path, env: dict[str, str], **extra: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "flk_tasks.py").write_text(TASKS_MODULE)
    env = dict(env, FLK_BROKER="memory://", FLK_MODE="hub", FLK_LOG_FILE=str(tmp_path / "logs" / "celery.log"))
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    env.update(extra)
    return run([sys.executable, "-m", "celery", "-A", "flk_tasks", "worker", "--pool=solo"], tmp_path, env)


def test_celery_worker_with_missing_log_directory_says_to_create_it(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    result = celery_worker(tmp_path, subprocess_env, FLK_MODE="files")
    assert_one_clear_line(result, "does not exist: create it")


def test_celery_worker_with_unreachable_hub_says_to_start_it(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    (tmp_path / "logs").mkdir()
    result = celery_worker(tmp_path, subprocess_env, FLK_HUB_ADDRESS=f"unix:{tmp_path}/nobody.sock")
    assert_one_clear_line(result, "no log hub answers at")


def test_celery_setup_without_a_celery_app_is_refused_with_the_right_call() -> None:
    from flocklog.contrib.celery import setup

    with pytest.raises(ConfigError, match=r"call it as setup\(app\)"):
        setup(None)


def test_gunicorn_with_missing_log_directory_stops_before_serving(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    shutil.copytree(EXAMPLES / "gunicorn_app", tmp_path / "app")
    env = dict(subprocess_env, LOG_FILE=str(tmp_path / "missing" / "app.log"), BIND="127.0.0.1:0")
    result = run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"], tmp_path / "app", env)
    assert_one_clear_line(result, "does not exist: create it")


def test_uvicorn_wrapper_with_unreachable_hub_says_to_start_it(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    shutil.copytree(EXAMPLES / "uvicorn_app", tmp_path / "app")
    args = [sys.executable, "-m", "flocklog.contrib.uvicorn", "--hub-address", "tcp://127.0.0.1:9", "--", "app:app"]
    result = run(args, tmp_path / "app", subprocess_env)
    assert_one_clear_line(result, "no log hub answers at tcp://127.0.0.1:9")


def test_uvicorn_wrapper_files_mode_refuses_a_hub_address_and_a_missing_directory(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    shutil.copytree(EXAMPLES / "uvicorn_app", tmp_path / "app")
    wrapper = [sys.executable, "-m", "flocklog.contrib.uvicorn", "--mode", "files"]
    result = run([*wrapper, "--hub-address", "unix:/x.sock", "--", "app:app"], tmp_path / "app", subprocess_env)
    assert_one_clear_line(result, "--mode files writes the file from every worker: it takes no --hub-address")
    result = run([*wrapper, "--log-file", "missing/app.log", "--", "app:app"], tmp_path / "app", subprocess_env)
    assert_one_clear_line(result, "does not exist: create it")


def test_django_with_incomplete_flocklog_setting_names_the_missing_key(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    project = tmp_path / "django_celery"
    shutil.copytree(EXAMPLES / "django_celery", project)
    settings = project / "myproject" / "settings.py"
    settings.write_text(settings.read_text() + '\nFLOCKLOG = {"MODE": "hub"}\n')
    result = run([sys.executable, "manage.py", "shell", "-c", "pass"], project, subprocess_env)
    assert_one_clear_line(result, "FLOCKLOG MODE 'hub' needs HUB_ADDRESS")


def test_celery_setup_called_twice_keeps_only_the_last_receivers() -> None:
    from celery import Celery, signals

    from flocklog.contrib.celery import setup

    app = Celery("twice", broker="memory://")
    first = setup(app, mode="files", log_file="logs/celery.log")
    second = setup(app, mode="files", log_file="logs/celery.log")
    live = list(signals.setup_logging._live_receivers(None))
    assert second.on_setup_logging in live
    assert first.on_setup_logging not in live
    assert app.conf.worker_hijack_root_logger is False
    for signal, receiver in second.receivers:
        signal.disconnect(receiver)
