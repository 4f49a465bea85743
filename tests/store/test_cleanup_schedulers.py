"""Retention from the schedulers: the Celery beat preset (task + 02:00 crontab) and the Django command."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from flocklog.errors import ConfigError
from flocklog.pipeline.record import ExecutionRecord
from flocklog.store import open_store


def make_store(path: Path, ages_in_days: list[float]) -> str:
    """An SQLite store at ``path``, written by the pipeline's store, one row per age (days before now)."""
    url = f"sqlite:///{path}"
    now = datetime.now(timezone.utc)
    store = open_store(url)
    store.create_schema()
    store.write_batch([ExecutionRecord(level=20, message="m", ts=now - timedelta(days=a)) for a in ages_in_days])
    store.close()
    return url


def ages_left(path: Path) -> list[int]:
    now = datetime.now(timezone.utc).timestamp()
    conn = sqlite3.connect(path)
    try:
        return sorted(round((now - r[0]) / 86400) for r in conn.execute("SELECT ts FROM flocklog_execution_log"))
    finally:
        conn.close()


AGES = [0.25, 10, 100, 200, 400, 500, 600, 700, 800]


def test_beat_preset_schedules_the_cleanup_task_daily_at_two_and_the_task_deletes_old_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from celery.schedules import crontab

    from flocklog.pipeline.beat import TASK_NAME, beat_schedule, install_beat_schedule
    from flocklog.pipeline.celery_app import make_celery_app

    # The pipeline's own app carries the preset already; installing again with options replaces only our entry.
    app = make_celery_app("memory://", task_always_eager=True)
    assert app.conf.beat_schedule["flocklog-cleanup"]["schedule"] == crontab(hour=2, minute=0)
    app.conf.beat_schedule = {**app.conf.beat_schedule, "other": {"task": "x", "schedule": 60.0}}
    url = make_store(tmp_path / "store.db", AGES)
    install_beat_schedule(app, days=365, database_url=url)

    entry = app.conf.beat_schedule["flocklog-cleanup"]
    assert "other" in app.conf.beat_schedule, "the merge must keep existing entries"
    assert entry["task"] == TASK_NAME == "flocklog.cleanup"
    assert entry["schedule"] == crontab(hour=2, minute=0)
    assert entry["schedule"].hour == {2} and entry["schedule"].minute == {0}
    assert entry["schedule"].day_of_week == set(range(7))
    assert "flocklog.pipeline.beat" in app.conf.include
    assert TASK_NAME in app.tasks  # the shared task resolved on this app

    outcome = app.tasks[TASK_NAME].apply(kwargs=entry["kwargs"]).get()
    assert outcome["deleted"] == 5
    assert ages_left(tmp_path / "store.db") == [0, 10, 100, 200]

    # Arguments left out come from the app config, then the environment.
    other = make_store(tmp_path / "other.db", AGES)
    monkeypatch.setenv("FLOCKLOG_DATABASE_URL", other)
    monkeypatch.setenv("FLOCKLOG_RETENTION_DAYS", "150")
    app.tasks[TASK_NAME].apply().get()
    assert ages_left(tmp_path / "other.db") == [0, 10, 100]
    app.conf.flocklog_retention_days = None
    app.conf.flocklog_retention_keep = 1
    monkeypatch.delenv("FLOCKLOG_RETENTION_DAYS")
    app.tasks[TASK_NAME].apply().get()
    assert ages_left(tmp_path / "other.db") == [0]

    custom = beat_schedule(hour=3, minute=30, day_of_week="mon")["flocklog-cleanup"]["schedule"]
    assert custom.hour == {3} and custom.minute == {30} and custom.day_of_week == {1}


def test_beat_task_refuses_a_bad_retention_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from celery import Celery

    from flocklog.pipeline.beat import TASK_NAME

    app = Celery("flk_retention_bad", broker="memory://", backend="cache+memory://")
    app.conf.task_always_eager = True
    monkeypatch.setenv("FLOCKLOG_DATABASE_URL", make_store(tmp_path / "store.db", AGES))
    monkeypatch.setenv("FLOCKLOG_RETENTION_DAYS", "a year")
    with pytest.raises(ConfigError, match="FLOCKLOG_RETENTION_DAYS must be a float"):
        app.tasks[TASK_NAME].apply().get()
    assert len(ages_left(tmp_path / "store.db")) == len(AGES)


def run_django(
    tmp_path: Path, settings: str, args: list[str], env: dict[str, str], command: str = "cleanup_audit_logs"
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "flk_settings.py").write_text(textwrap.dedent(settings))
    env = {**env, "PYTHONPATH": f"{tmp_path}:{env['PYTHONPATH']}", "DJANGO_SETTINGS_MODULE": "flk_settings"}
    return subprocess.run(
        [sys.executable, "-m", "django", command, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_django_command_cleans_up_with_the_flocklog_app_installed(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    url = make_store(tmp_path / "store.db", AGES)
    settings = f"""
        SECRET_KEY = "x"
        INSTALLED_APPS = ["flocklog.contrib.django"]
        FLOCKLOG = {{"LOG_FILE": {str(tmp_path / "app.log")!r}}}
    """
    env = {**subprocess_env, "FLOCKLOG_DATABASE_URL": url}
    dry = run_django(tmp_path, settings, ["--days", "300", "--dry-run"], env)
    assert dry.returncode == 0, dry.stderr
    assert "would delete 5 rows" in dry.stdout
    assert len(ages_left(tmp_path / "store.db")) == len(AGES)

    real = run_django(tmp_path, settings, ["--days", "300", "--keep", "3", "--database", url], subprocess_env)
    assert real.returncode == 0, real.stderr
    assert "deleted 6 rows" in real.stdout
    assert ages_left(tmp_path / "store.db") == [0, 10, 100]

    bad = run_django(tmp_path, settings, ["--days", "-1", "--database", url], subprocess_env)
    assert bad.returncode == 1 and "days must be a number >= 0" in bad.stderr


def test_django_command_reads_the_database_url_from_the_flocklog_setting(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    # The flocklog app's own FLOCKLOG validation does not know DATABASE_URL yet, so this settings module
    # installs the same app module under a no-op AppConfig: the command is found by module path alone.
    url = make_store(tmp_path / "store.db", AGES)
    settings = f"""
        from django.apps import AppConfig

        class CommandsOnly(AppConfig):
            name = "flocklog.contrib.django"
            label = "flocklog"

        SECRET_KEY = "x"
        INSTALLED_APPS = ["flk_settings.CommandsOnly"]
        FLOCKLOG = {{"DATABASE_URL": {url!r}}}
    """
    env = {k: v for k, v in subprocess_env.items() if k != "FLOCKLOG_DATABASE_URL"}
    result = run_django(tmp_path, settings, ["--days", "450"], env)
    assert result.returncode == 0, result.stderr
    assert "deleted 4 rows" in result.stdout
    assert ages_left(tmp_path / "store.db") == [0, 10, 100, 200, 400]


def test_django_command_needs_only_the_database_when_flocklog_does_not_configure_logging(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    # CONFIGURE=False: LOGGING does the logging set-up, so FLOCKLOG holds no LOG_FILE; the command only needs
    # the database, and the installed flocklog app must not refuse to load for want of a log file.
    url = make_store(tmp_path / "store.db", AGES)
    settings = f"""
        SECRET_KEY = "x"
        INSTALLED_APPS = ["flocklog.contrib.django"]
        FLOCKLOG = {{"CONFIGURE": False, "DATABASE_URL": {url!r}}}
    """
    env = {k: v for k, v in subprocess_env.items() if k != "FLOCKLOG_DATABASE_URL"}
    result = run_django(tmp_path, settings, ["--days", "450"], env)
    assert result.returncode == 0, result.stderr
    assert "deleted 4 rows" in result.stdout
    assert ages_left(tmp_path / "store.db") == [0, 10, 100, 200, 400]


def test_a_real_worker_resolves_the_task_by_name_through_the_installed_preset(
    tmp_path: Path, subprocess_env: dict[str, str], redis_url: str
) -> None:
    # The worker's app only calls install_beat_schedule(); the name "flocklog.cleanup" must reach a worker process
    # that a separate producer addresses by name alone (as celery beat does).
    url = make_store(tmp_path / "store.db", AGES)
    (tmp_path / "flk_beat_app.py").write_text(
        textwrap.dedent(f"""
            from celery import Celery
            from flocklog.pipeline.beat import install_beat_schedule

            app = Celery("flk_beat_app", broker={redis_url!r}, backend={redis_url!r})
            app.conf.broker_connection_retry_on_startup = True
            install_beat_schedule(app, days=300, database_url={url!r})
        """)
    )
    env = {**subprocess_env, "PYTHONPATH": f"{tmp_path}:{subprocess_env['PYTHONPATH']}"}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "flk_beat_app",
            "worker",
            "--pool=solo",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel=WARNING",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        from celery import Celery

        producer = Celery("producer", broker=redis_url, backend=redis_url)
        outcome = producer.send_task("flocklog.cleanup", kwargs={"days": 300, "database_url": url}).get(timeout=90)
        assert outcome["deleted"] == 5
        assert ages_left(tmp_path / "store.db") == [0, 10, 100, 200]
    finally:
        worker.terminate()
        output = worker.communicate(timeout=60)[0]
    assert "Traceback" not in output, output


def test_django_command_answers_to_the_execution_log_name_too(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    url = make_store(tmp_path / "store.db", AGES)
    settings = """
        SECRET_KEY = "x"
        INSTALLED_APPS = ["flocklog.contrib.django"]
        FLOCKLOG = {"CONFIGURE": False}
    """
    env = {**subprocess_env, "FLOCKLOG_DATABASE_URL": url}
    dry = run_django(tmp_path, settings, ["--days", "300", "--dry-run"], env, command="cleanup_execution_logs")
    assert dry.returncode == 0, dry.stderr
    assert "would delete 5 rows" in dry.stdout
