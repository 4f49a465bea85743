"""``flocklog.configure()``: one call that points a plain script's root logger at a safe file set or a hub.

For what has no framework hook: cron jobs, management scripts, a worker pool of your own. The frameworks have
their integrations in :mod:`flocklog.contrib`; this is the same machinery without the framework.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

from flocklog.contrib import HUB_ADDRESS_ENV, PID_TID_FORMAT, hub_handler, install_root_handler, level_number
from flocklog.errors import ConfigError

__all__ = ["configure"]


def configure(
    log_file: str | os.PathLike[str] | None = None,
    *,
    hub: str | None = None,
    when: str | None = "midnight",
    interval: int = 1,
    backup_count: int = 7,
    max_bytes: int = 0,
    utc: bool = False,
    compress: bool = False,
    max_age: float | None = None,
    level: str | int = "INFO",
    format: str = PID_TID_FORMAT,
    style: Literal["%", "{", "$"] = "{",
) -> logging.Handler:
    """Send the root logger to ``log_file`` (every process may write it) or to the hub at ``hub``; returns the handler.

    - ``log_file``: a :class:`flocklog.TimedRotatingFileHandler` rotating at ``when`` (and at ``max_bytes`` if
      set), or with ``when=None`` a size-only :class:`flocklog.RotatingFileHandler`. Processes that never met
      each other (a cron job next to gunicorn workers) can share the set: the lock file, not a parent, is what
      they agree through. A relative path is resolved now, against the working directory (cron's is ``$HOME``).
    - ``hub``: a :class:`flocklog.HubHandler` to ``unix:/path`` or ``tcp:host:port``. A hub that does not answer
      is not an error here: records are spooled locally and replayed once it answers. The file options belong
      to the hub then, and passing one is an error rather than something silently ignored.
    - neither: ``$FLOCKLOG_HUB_ADDRESS`` if set (a process started by a server that runs a hub), else an error.

    ``level`` is set on the root logger, as ``logging.basicConfig(level=...)`` does. Calling again replaces
    flocklog's handler on the root logger (one installed by an earlier call, an integration or a dictConfig naming
    a flocklog class) in one step, so no record is lost or written twice meanwhile; other handlers stay. Call it
    after a framework has set up logging: Django's, Celery's and uvicorn's set-up replace the root's handlers
    (use :mod:`flocklog.contrib` there instead).
    """
    if log_file is not None and hub is not None:
        raise ConfigError("pass log_file (this process writes the files) or hub (the hub writes them), not both")
    level_number(level)  # everything is checked before a file, a socket or a thread exists
    formatter = _formatter(format, style)
    if log_file is None:
        address = hub if hub is not None else os.environ.get(HUB_ADDRESS_ENV)
        if not address:
            raise ConfigError(
                f"nothing to log to: pass log_file='/var/log/app/app.log' or hub='unix:/path', or set {HUB_ADDRESS_ENV}"
            )
        given: dict[str, Any] = {
            "when": when,
            "interval": interval,
            "backup_count": backup_count,
            "max_bytes": max_bytes,
            "utc": utc,
            "compress": compress,
            "max_age": max_age,
        }
        defaults = configure.__kwdefaults__ or {}  # the signature's own defaults, so the two can never disagree
        misplaced = sorted(name for name, value in given.items() if value != defaults[name])
        if misplaced:
            raise ConfigError(
                f"{', '.join(misplaced)} configure log files, and with a hub its own handlers write them: "
                "set them where the hub runs (flocklog serve --config, or the integration that starts it)"
            )
        handler = hub_handler(address, None)
    else:
        handler = _file_handler(log_file, when, interval, backup_count, max_bytes, utc, compress, max_age)
    handler.setFormatter(formatter)
    install_root_handler(handler, level, also=_is_flocklog_handler)
    return handler


def _formatter(format: str, style: Literal["%", "{", "$"]) -> logging.Formatter:
    try:
        return logging.Formatter(format, style=style)
    except ValueError as exc:  # "invalid format: no fields" says nothing about which style was expected
        raise ConfigError(
            f"format {format!r} is not a valid {style}-style format ({exc}): pass style='%' for "
            "'%(message)s' formats, style='{' for '{message}' ones"
        ) from None


def _is_flocklog_handler(handler: logging.Handler) -> bool:
    """A flocklog handler that dictConfig (or the user) put on the root: left there, every record goes out twice."""
    return type(handler).__module__.startswith("flocklog.")


def _file_handler(
    log_file: str | os.PathLike[str],
    when: str | None,
    interval: int,
    backup_count: int,
    max_bytes: int,
    utc: bool,
    compress: bool,
    max_age: float | None,
) -> logging.Handler:
    from flocklog.files.handlers import RotatingFileHandler, TimedRotatingFileHandler

    path = str(Path(log_file).expanduser().resolve())
    if when is None:
        if max_bytes <= 0:
            raise ConfigError("when=None rotates by size only: give max_bytes > 0 (or a when, such as 'midnight')")
        if interval != 1 or utc:
            raise ConfigError("interval and utc belong to timed rotation, and when=None rotates by size only")
        return RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8", compress=compress, max_age=max_age
        )
    return TimedRotatingFileHandler(
        path,
        when=when,
        interval=interval,
        backupCount=backup_count,
        encoding="utf-8",
        utc=utc,
        maxBytes=max_bytes,
        compress=compress,
        max_age=max_age,
    )
