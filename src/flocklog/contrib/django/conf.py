"""The ``FLOCKLOG`` setting read and checked, and ``LOGGING`` dicts built from flocklog's class paths."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from flocklog.contrib import PID_TID_FORMAT, FileSettings, Mode, check_mode, logging_dict
from flocklog.errors import ConfigError

#: ``{levelname} {asctime} {module} [PID:{process}, TID:{thread}] {message}`` with ``style='{'``.
DJANGO_FORMAT = PID_TID_FORMAT

_KEYS = {
    "MODE",
    "HUB_ADDRESS",
    "START_HUB",
    "LOG_FILE",
    "WHEN",
    "INTERVAL",
    "BACKUP_COUNT",
    "MAX_BYTES",
    "COMPRESS",
    "UTC",
    "LEVEL",
    "FORMAT",
    "CONFIGURE",
    "DATABASE_URL",  # read by the cleanup_audit_logs command (execution-log store), not by the logging setup
}


@dataclass(frozen=True)
class DjangoSettings:
    mode: Mode
    files: FileSettings | None
    hub_address: str | None
    start_hub: bool
    configure: bool


def read_settings(raw: dict[str, Any] | None) -> DjangoSettings:
    """Validate ``settings.FLOCKLOG``; unknown keys are an error, since a typo would silently change nothing.

    Keys: ``MODE`` ('files' or 'hub', default 'files'), ``LOG_FILE``, ``WHEN`` ('midnight'), ``INTERVAL`` (1),
    ``BACKUP_COUNT`` (7), ``MAX_BYTES`` (0), ``COMPRESS`` (False), ``UTC`` (False), ``LEVEL`` ('INFO'),
    ``FORMAT`` (:data:`DJANGO_FORMAT`, '{' style), ``HUB_ADDRESS`` (hub mode; default ``$FLOCKLOG_HUB_ADDRESS``),
    ``START_HUB`` (hub mode: start an in-process hub owning ``LOG_FILE``, for ``runserver`` and single processes),
    ``CONFIGURE`` (True: ``ready()`` installs the root handler; False: you did it in ``LOGGING``).
    """
    raw = dict(raw or {})
    unknown = set(raw) - _KEYS
    if unknown:
        raise ConfigError(f"unknown FLOCKLOG keys {sorted(unknown)}: the accepted keys are {sorted(_KEYS)}")
    mode = check_mode(str(raw.get("MODE", "files")))
    files = None
    if raw.get("LOG_FILE"):
        files = FileSettings(
            log_file=os.fspath(raw["LOG_FILE"]),
            when=str(raw.get("WHEN", "midnight")),
            interval=int(raw.get("INTERVAL", 1)),
            backup_count=int(raw.get("BACKUP_COUNT", 7)),
            max_bytes=int(raw.get("MAX_BYTES", 0)),
            compress=bool(raw.get("COMPRESS", False)),
            utc=bool(raw.get("UTC", False)),
            level=raw.get("LEVEL", "INFO"),
            format=str(raw.get("FORMAT", DJANGO_FORMAT)),
        )
    start_hub = bool(raw.get("START_HUB", False))
    hub_address = raw.get("HUB_ADDRESS") or os.environ.get("FLOCKLOG_HUB_ADDRESS")
    configure = bool(raw.get("CONFIGURE", True))
    # With CONFIGURE=False, LOGGING does the set-up: a LOG_FILE is not needed (cleanup_audit_logs needs only the
    # database), and files mode has nothing to check.
    if configure and mode == "files" and files is None:
        raise ConfigError(
            "FLOCKLOG MODE 'files' needs LOG_FILE, e.g. FLOCKLOG = {'LOG_FILE': BASE_DIR / 'logs/app.log'}"
        )
    if mode == "hub" and start_hub and files is None:
        raise ConfigError("FLOCKLOG START_HUB needs LOG_FILE: the hub must know which file it owns")
    if mode == "hub" and not start_hub and not hub_address:
        raise ConfigError(
            "FLOCKLOG MODE 'hub' needs HUB_ADDRESS (or $FLOCKLOG_HUB_ADDRESS), or START_HUB=True with LOG_FILE"
        )
    return DjangoSettings(
        mode=mode,
        files=files,
        hub_address=str(hub_address) if hub_address else None,
        start_hub=start_hub,
        configure=configure,
    )


def logging_settings(
    *,
    mode: str = "files",
    log_file: str | os.PathLike[str] | None = None,
    when: str = "midnight",
    interval: int = 1,
    backup_count: int = 7,
    max_bytes: int = 0,
    level: str = "INFO",
    hub_address: str | None = None,
    loggers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``LOGGING`` dict whose root logger goes to flocklog (set ``FLOCKLOG['CONFIGURE'] = False`` with it).

    Django's own loggers (``django``, ``django.request``...) propagate to the root, so they land in the file too.
    """
    checked = check_mode(mode)
    files = None
    if log_file is not None:
        files = FileSettings(
            log_file=os.fspath(log_file),
            when=when,
            interval=interval,
            backup_count=backup_count,
            max_bytes=max_bytes,
            level=level,
        )
    return logging_dict(mode=checked, files=files, hub_address=hub_address, loggers=loggers)
