"""``flocklog.configure()``: one call that points a plain script's root logger at a safe file set or a hub.

For what has no framework hook: cron jobs, management scripts, a worker pool of your own. It also owns the two
builders every integration in :mod:`flocklog.contrib` shares (a file handler from :class:`FileSettings`, a hub
client from an address), so this module sits above ``files/`` and ``hub/`` and below ``contrib/``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

from flocklog._filesettings import DEFAULTS, FILE_OPTIONS, FileSettings
from flocklog._roothandler import PID_TID_FORMAT, install_root_handler, is_flocklog_handler, level_number
from flocklog.errors import ConfigError

__all__ = ["build_file_handler", "build_hub_handler", "configure", "hub_address", "make_formatter"]

HUB_ADDRESS_ENV = "FLOCKLOG_HUB_ADDRESS"


def configure(
    log_file: str | os.PathLike[str] | None = None,
    *,
    hub: str | None = None,
    when: str | None = DEFAULTS["when"],
    interval: int = DEFAULTS["interval"],
    backup_count: int = DEFAULTS["backup_count"],
    max_bytes: int = DEFAULTS["max_bytes"],
    utc: bool = DEFAULTS["utc"],
    compress: bool = DEFAULTS["compress"],
    max_age: float | None = DEFAULTS["max_age"],
    encoding: str = DEFAULTS["encoding"],
    file_mode: int | str | None = DEFAULTS["file_mode"],
    level: str | int = "INFO",
    format: str = PID_TID_FORMAT,
    style: Literal["%", "{", "$"] = "{",
) -> logging.Handler:
    """Send the root logger to ``log_file`` (every process may write it) or to the hub at ``hub``; returns the handler.

    - ``log_file``: a :class:`flocklog.TimedRotatingFileHandler` rotating at ``when`` (and at ``max_bytes`` if
      set), or with ``when=None`` a size-only :class:`flocklog.RotatingFileHandler`. Processes that never met
      each other (a cron job next to gunicorn workers) can share the set: the lock file, not a parent, is what
      they agree through. A relative path is resolved now, against the working directory (cron's is ``$HOME``).
    - ``hub``: a :class:`flocklog.HubHandler` to ``unix:/path``, ``tcp:host:port`` or ``tcp://host:port``. A hub
      that does not answer is not an error here: records are spooled locally and replayed once it answers. The
      file options belong to the hub then, and passing one is an error rather than something silently ignored.
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
    formatter = make_formatter(format, style)
    given: dict[str, Any] = {
        "when": when,
        "interval": interval,
        "backup_count": backup_count,
        "max_bytes": max_bytes,
        "utc": utc,
        "compress": compress,
        "max_age": max_age,
        "encoding": encoding,
        "file_mode": file_mode,
    }
    handler: logging.Handler
    if log_file is None:
        text = hub if hub is not None else os.environ.get(HUB_ADDRESS_ENV)
        if not text:
            raise ConfigError(
                f"nothing to log to: pass log_file='/var/log/app/app.log' or hub='unix:/path', or set {HUB_ADDRESS_ENV}"
            )
        misplaced = sorted(name for name in FILE_OPTIONS if given[name] != DEFAULTS[name])
        if misplaced:
            raise ConfigError(
                f"{', '.join(misplaced)} configure log files, and with a hub its own handlers write them: "
                "set them where the hub runs (flocklog serve --config, or the integration that starts it)"
            )
        handler = build_hub_handler(hub_address(text))
    else:
        handler = build_file_handler(FileSettings.parse(log_file, **given))
    handler.setFormatter(formatter)
    install_root_handler(handler, level, also=is_flocklog_handler)
    return handler


def hub_address(text: str) -> str:
    """A hub address in the hub's canonical form; ``tcp:host:port`` (the form our docs used) means ``tcp://``.

    Checked now, so a typo is a ConfigError at start-up instead of a client that spools forever towards a host
    named ``tcp:127.0.0.1``.
    """
    from flocklog.hub._address import parse_address

    raw = text.strip()
    if raw.startswith("tcp:") and not raw.startswith("tcp://"):
        raw = "tcp://" + raw[len("tcp:") :]
    return str(parse_address(raw))


def make_formatter(format: str, style: Literal["%", "{", "$"] = "{") -> logging.Formatter:
    """``flocklog.Formatter`` (byte-identical to the stdlib's, cheaper), or JSON lines for ``format="json"``."""
    from flocklog.formatting import make_formatter as build

    return build(format, style=style)


def build_file_handler(settings: FileSettings) -> logging.Handler:
    """The handler :class:`FileSettings` names: size-only rotation when ``when`` is None, timed otherwise."""
    from flocklog.files.handlers import RotatingFileHandler, TimedRotatingFileHandler

    kwargs = settings.handler_kwargs()
    if settings.when is None:
        return RotatingFileHandler(**kwargs)
    return TimedRotatingFileHandler(**kwargs)


def build_hub_handler(address: str | None, *, handle_sigterm: bool = True) -> logging.Handler:
    """A hub client to ``address`` (None: ``$FLOCKLOG_HUB_ADDRESS`` when it is built).

    ``handle_sigterm=False`` where the server owns the worker's signals (uWSGI): the client then drains at exit.
    """
    from flocklog.hub.client import HubHandler

    return HubHandler(hub_address(address) if address is not None else None, handle_sigterm=handle_sigterm)
