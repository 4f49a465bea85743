"""The ``FLOCKLOG`` setting read and checked, and ``LOGGING`` dicts built from flocklog's class paths."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flocklog._filesettings import FILE_OPTIONS
from flocklog.contrib._setup import PID_TID_FORMAT, LogSettings, Mode, check_mode, log_settings, logging_dict
from flocklog.errors import ConfigError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from flocklog._filesettings import FileOptions

__all__ = ["DJANGO_FORMAT", "DjangoSettings", "logging_settings", "read_settings"]

#: ``{levelname} {asctime} {module} [PID:{process}, TID:{thread}] {message}`` with ``style='{'``.
DJANGO_FORMAT = PID_TID_FORMAT

#: The file options' keys are their keyword names in upper case (``WHEN``, ``MAX_BYTES``, ``MAX_AGE`` ...).
_FILE_KEYS = {name.upper(): name for name in FILE_OPTIONS}
_KEYS = {
    "MODE",
    "HUB_ADDRESS",
    "START_HUB",
    "LOG_FILE",
    "LEVEL",
    "FORMAT",
    "CONFIGURE",
    "DATABASE_URL",  # read by the cleanup_audit_logs command (execution-log store), not by the logging setup
    *_FILE_KEYS,
}


@dataclass(frozen=True)
class DjangoSettings:
    mode: Mode
    settings: LogSettings
    hub_address: str | None
    start_hub: bool
    configure: bool


def read_settings(raw: dict[str, Any] | None) -> DjangoSettings:
    """Validate ``settings.FLOCKLOG``; unknown keys are an error, since a typo would silently change nothing.

    Keys: ``MODE`` ('files' or 'hub', default 'files'), ``LOG_FILE``, the file options of every flocklog entry
    point in upper case -- ``WHEN`` ('midnight'; None rotates by size only), ``INTERVAL`` (1), ``UTC`` (False),
    ``BACKUP_COUNT`` (7), ``MAX_BYTES`` (0), ``COMPRESS`` (False), ``MAX_AGE`` (None), ``ENCODING`` ('utf-8') --
    ``LEVEL`` ('INFO'), ``FORMAT`` (:data:`DJANGO_FORMAT`, '{' style), ``HUB_ADDRESS`` (hub mode; default
    ``$FLOCKLOG_HUB_ADDRESS``), ``START_HUB`` (hub mode: start an in-process hub owning ``LOG_FILE``, for
    ``runserver`` and single processes), ``CONFIGURE`` (True: ``ready()`` installs the root handler; False: you
    did it in ``LOGGING``).
    """
    raw = dict(raw or {})
    unknown = set(raw) - _KEYS
    if unknown:
        raise ConfigError(f"unknown FLOCKLOG keys {sorted(unknown)}: the accepted keys are {sorted(_KEYS)}")
    mode = check_mode(str(raw.get("MODE", "files")))
    options = {name: raw[key] for key, name in _FILE_KEYS.items() if key in raw}
    try:
        settings = log_settings(
            raw.get("LOG_FILE") or None,
            level=raw.get("LEVEL", "INFO"),
            format=str(raw.get("FORMAT", DJANGO_FORMAT)),
            **options,
        )
    except ConfigError as exc:
        raise ConfigError(f"FLOCKLOG: {exc}") from None
    start_hub = bool(raw.get("START_HUB", False))
    hub_address = raw.get("HUB_ADDRESS") or os.environ.get("FLOCKLOG_HUB_ADDRESS")
    configure = bool(raw.get("CONFIGURE", True))
    # With CONFIGURE=False, LOGGING does the set-up: a LOG_FILE is not needed (cleanup_audit_logs needs only the
    # database), and files mode has nothing to check.
    if configure and mode == "files" and settings.files is None:
        raise ConfigError(
            "FLOCKLOG MODE 'files' needs LOG_FILE, e.g. FLOCKLOG = {'LOG_FILE': BASE_DIR / 'logs/app.log'}"
        )
    if mode == "hub" and start_hub and settings.files is None:
        raise ConfigError("FLOCKLOG START_HUB needs LOG_FILE: the hub must know which file it owns")
    if mode == "hub" and not start_hub and not hub_address:
        raise ConfigError(
            "FLOCKLOG MODE 'hub' needs HUB_ADDRESS (or $FLOCKLOG_HUB_ADDRESS), or START_HUB=True with LOG_FILE"
        )
    return DjangoSettings(
        mode=mode,
        settings=settings,
        hub_address=str(hub_address) if hub_address else None,
        start_hub=start_hub,
        configure=configure,
    )


def logging_settings(
    *,
    mode: str = "files",
    log_file: str | os.PathLike[str] | None = None,
    level: str = "INFO",
    format: str = DJANGO_FORMAT,
    hub_address: str | None = None,
    loggers: dict[str, Any] | None = None,
    **file_options: Unpack[FileOptions],
) -> dict[str, Any]:
    """A ``LOGGING`` dict whose root logger goes to flocklog (set ``FLOCKLOG['CONFIGURE'] = False`` with it).

    Takes the file options of every flocklog entry point (``when=None, max_bytes=...`` rotates by size only).
    Django's own loggers (``django``, ``django.request``...) propagate to the root, so they land in the file too.
    """
    checked = check_mode(mode)
    settings = log_settings(log_file, level=level, format=format, **file_options)
    return logging_dict(mode=checked, settings=settings, hub_address=hub_address, loggers=loggers)
