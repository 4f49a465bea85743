"""``flocklog.configure()``: one call that points a plain script's root logger at a safe file set or a hub.

For what has no framework hook: cron jobs, management scripts, a worker pool of your own. The frameworks have
their integrations in :mod:`flocklog.contrib`; this is the same machinery without the framework.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

from flocklog.contrib import (
    HUB_ADDRESS_ENV,
    PID_TID_FORMAT,
    FileSettings,
    hub_handler,
    install_root_handler,
    level_number,
)
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
      they agree through.
    - ``hub``: a :class:`flocklog.HubHandler` to ``unix:/path`` or ``tcp:host:port``. A hub that does not answer
      is not an error here: records are spooled locally and replayed once it answers.
    - neither: ``$FLOCKLOG_HUB_ADDRESS`` if set (a process started by a server that runs a hub), else an error.

    Calling it again replaces the handler an earlier call (or an integration) installed rather than adding a
    second one, so a record is never written twice. Handlers of other libraries on the root logger are kept.
    """
    if log_file is not None and hub is not None:
        raise ConfigError("pass log_file (this process writes the files) or hub (the hub writes them), not both")
    level_number(level)  # an unknown level fails here, before anything is installed
    if log_file is None:
        address = hub or os.environ.get(HUB_ADDRESS_ENV)
        if not address:
            raise ConfigError(
                f"nothing to log to: pass log_file='logs/app.log' or hub='unix:/path', or set {HUB_ADDRESS_ENV}"
            )
        files = FileSettings(log_file="unused", level=level, format=format, style=style)
        handler = hub_handler(address, files)
    else:
        handler = _file_handler(log_file, when, interval, backup_count, max_bytes, utc, compress, max_age)
        handler.setFormatter(logging.Formatter(format, style=style))
    install_root_handler(handler, level)
    return handler


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
