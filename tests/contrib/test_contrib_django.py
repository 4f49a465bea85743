"""The django_celery example runs as its README says: worker on the embedded broker, task sent from a shell."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from contrib_helpers import EXAMPLES, Server, wait_until

pytestmark = pytest.mark.slow


def test_task_sent_from_django_shell_logs_into_celery_log_through_the_workers_hub(
    tmp_path: Path, run_id: str, subprocess_env: dict[str, str], start_server: Callable[..., Server]
) -> None:
    project = tmp_path / "django_celery"
    shutil.copytree(EXAMPLES / "django_celery", project)
    env = dict(subprocess_env)
    env.pop("CELERY_BROKER_URL", None)  # the embedded filesystem broker, as in the README
    env.pop("DJANGO_SETTINGS_MODULE", None)
    args = [sys.executable, "-m", "celery", "-A", "myproject", "worker", "--concurrency=4", "--loglevel=INFO"]
    worker = start_server(args, cwd=project, env=env, log=tmp_path / "worker.out")
    log_file = project / "logs" / "celery.log"

    def log_text() -> str:
        return log_file.read_text() if log_file.exists() else ""

    wait_until(lambda: "ready." in log_text(), 60, "the worker to be ready", worker.output)
    marker = f"marker-{run_id}"
    shell = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", f"from myapp.tasks import my_task; my_task.delay({marker!r})"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shell.returncode == 0, shell.stderr
    wait_until(lambda: f"plain logger in my_task: {marker}" in log_text(), 30, "the task's records", log_text)
    assert worker.terminate() == 0, worker.output()
    lines = log_text().splitlines()
    task_lines = [line for line in lines if marker in line]
    # Celery's task logger and a plain logging.getLogger both land, once each, from a prefork child (not the
    # main process, whose pid logged "ready.").
    assert len([line for line in task_lines if "my_task ran:" in line]) == 1
    assert len([line for line in task_lines if "plain logger in my_task:" in line]) == 1
    main_pid = next(line for line in lines if "ready." in line).split("[PID:")[1].split(",")[0]
    assert all(f"[PID:{main_pid}," not in line for line in task_lines)
    assert all(line.count("[PID:") == 1 for line in lines)


def test_logging_settings_helper_gives_a_logging_dict_that_writes_the_pid_tid_format(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    code = (
        "import logging, logging.config, sys\n"
        "from flocklog.contrib.django import logging_settings\n"
        "logging.config.dictConfig(logging_settings(log_file=sys.argv[1], when='M', backup_count=5))\n"
        "logging.getLogger('django.request').warning('from django')\n"
    )
    log_file = tmp_path / "app.log"
    result = subprocess.run(
        [sys.executable, "-c", code, str(log_file)], env=subprocess_env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    line = log_file.read_text().strip()
    assert line.startswith("WARNING "), line
    assert f"[PID:{line.split('[PID:')[1].split(',')[0]}, TID:" in line
    assert line.endswith("from django")


@pytest.mark.parametrize(
    "flocklog_setting",
    [
        '{"MODE": "files", "LOG_FILE": BASE_DIR / "logs" / "app.log"}',
        '{"MODE": "hub", "START_HUB": True, "LOG_FILE": BASE_DIR / "logs" / "app.log"}',
    ],
    ids=["files", "in-process-hub"],
)
def test_flocklog_app_configures_the_root_logger_from_the_flocklog_setting(
    flocklog_setting: str, tmp_path: Path, run_id: str, subprocess_env: dict[str, str]
) -> None:
    project = tmp_path / "django_celery"
    shutil.copytree(EXAMPLES / "django_celery", project)
    settings = project / "myproject" / "settings.py"
    settings.write_text(settings.read_text() + f"\nFLOCKLOG = {flocklog_setting}\n")
    code = f"import logging; logging.getLogger('myapp.views').warning('hello {run_id}')"
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=project,
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in (project / "logs" / "app.log").read_text().splitlines() if run_id in line]
    # Logged once, formatted once (by the process that logged), drained before the process exited.
    assert len(lines) == 1, lines
    assert lines[0].startswith("WARNING ") and "[PID:" in lines[0] and lines[0].count("WARNING") == 1
    assert lines[0].endswith(f"hello {run_id}")
