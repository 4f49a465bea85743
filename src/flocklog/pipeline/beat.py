"""Celery beat preset for retention: the ``flocklog.cleanup`` task and a daily 02:00 schedule entry.

Run exactly ONE beat scheduler per deployment (``celery beat`` or ``worker -B`` on a single node): every beat
process sends its own copy of each scheduled task, so two schedulers would run the cleanup twice.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, shared_task
from celery.schedules import crontab

from flocklog.errors import StoreError

TASK_NAME = "flocklog.cleanup"
ENTRY_NAME = "flocklog-cleanup"
DEFAULT_DAYS = 365.0


def _env_number(name: str, kind: type[float] | type[int]) -> float | int | None:
    from flocklog.errors import ConfigError

    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return kind(raw)
    except ValueError as exc:
        raise ConfigError(f"${name} must be a {kind.__name__}, got {raw!r}") from exc


def retention_settings(conf: Any = None) -> dict[str, Any]:
    """days/keep/database_url/table from the Celery app config (``flocklog_retention_days``,
    ``flocklog_retention_keep``, ``flocklog_database_url``, ``flocklog_table``), then $FLOCKLOG_RETENTION_DAYS
    (default 365), $FLOCKLOG_RETENTION_KEEP, $FLOCKLOG_DATABASE_URL, $FLOCKLOG_TABLE and the embedded defaults.
    """
    from flocklog.store import resolve_database_url, resolve_table

    def setting(key: str) -> Any:
        return conf.get(key) if conf is not None else None

    days = setting("flocklog_retention_days")
    if days is None:
        days = _env_number("FLOCKLOG_RETENTION_DAYS", float)
    keep = setting("flocklog_retention_keep")
    if keep is None:
        keep = _env_number("FLOCKLOG_RETENTION_KEEP", int)
    if days is None and keep is None:
        days = DEFAULT_DAYS
    return {
        "days": days,
        "keep": keep,
        "database_url": resolve_database_url(setting("flocklog_database_url")),
        "table": resolve_table(setting("flocklog_table")),
    }


# A database that is down gets three more tries, minutes apart; a ConfigError is not retried (it cannot heal).
@shared_task(
    bind=True,
    name=TASK_NAME,
    ignore_result=False,
    autoretry_for=(StoreError,),
    retry_backoff=60,
    max_retries=3,
)
def cleanup_task(
    self: Any,
    days: float | None = None,
    keep: int | None = None,
    database_url: str | None = None,
    batch_size: int = 5000,
    table: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Run retention once; arguments left out come from the app config and the environment."""
    from flocklog.store.cleanup import cleanup

    defaults = retention_settings(self.app.conf)
    if days is None and keep is None:
        days, keep = defaults["days"], defaults["keep"]
    result = cleanup(
        database_url or defaults["database_url"],
        days=days,
        keep=keep,
        dry_run=dry_run,
        batch_size=batch_size,
        table=table or defaults["table"],
    )
    return result.to_dict()


def beat_schedule(
    hour: int | str = 2,
    minute: int | str = 0,
    days: float | None = 365,
    keep: int | None = None,
    *,
    database_url: str | None = None,
    table: str | None = None,
    **crontab_kwargs: Any,
) -> dict[str, dict[str, Any]]:
    """A ``beat_schedule`` entry running ``flocklog.cleanup`` daily at 02:00 (any crontab field may be given)."""
    kwargs: dict[str, Any] = {"days": days, "keep": keep}
    if database_url is not None:
        kwargs["database_url"] = database_url
    if table is not None:
        kwargs["table"] = table
    return {
        ENTRY_NAME: {
            "task": TASK_NAME,
            "schedule": crontab(hour=hour, minute=minute, **crontab_kwargs),
            "kwargs": kwargs,
            # A cleanup that could not start within 12 hours is stale: the next day's run covers it.
            "options": {"expires": 12 * 3600},
        }
    }


def install_beat_schedule(app: Celery, **schedule_kwargs: Any) -> dict[str, dict[str, Any]]:
    """Merge :func:`beat_schedule` into ``app.conf.beat_schedule`` and make workers import this task module.

    Remember: exactly one beat scheduler per deployment.
    """
    entry = beat_schedule(**schedule_kwargs)
    app.conf.beat_schedule = {**(app.conf.beat_schedule or {}), **entry}
    include = list(app.conf.include or ())
    if __name__ not in include:
        app.conf.include = [*include, __name__]
    return entry


def register(app: Celery) -> Any:
    """The task as bound to ``app`` (shared tasks attach to every app; this makes the attachment explicit)."""
    return app.tasks[TASK_NAME]
