"""gunicorn server hooks: the master owns the hub, every worker sends to it, nothing is lost at exit.

In ``gunicorn.conf.py``::

    from flocklog.contrib.gunicorn import hooks

    _flocklog = hooks(log_file="logs/app.log", when="midnight", backup_count=7)
    # or by size only: hooks(log_file="logs/app.log", when=None, max_bytes=1 << 30, backup_count=5)
    on_starting, post_fork, worker_exit, on_exit = (
        _flocklog.on_starting, _flocklog.post_fork, _flocklog.worker_exit, _flocklog.on_exit
    )

``--preload`` imports the application in the master *before* ``on_starting`` runs, so an application that
attaches its own handlers at import time would attach them before the hub exists; leave the handlers to
``post_fork`` (which installs a fresh client in every worker, with or without ``--preload``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flocklog.contrib._setup import (
    HUB_ADDRESS_ENV,
    PID_TID_FORMAT,
    LogSettings,
    check_hub_reachable,
    drain_installed,
    fail_startup,
    forget_inherited,
    hub_handler,
    install_root_handler,
    log_settings,
    say_loudly,
    start_owned_hub,
    startup_errors,
    stop_owned_hub,
)
from flocklog.errors import ConfigError, FlocklogError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from flocklog._filesettings import FileOptions

__all__ = ["GunicornHooks", "hooks"]


@dataclass
class GunicornHooks:
    """The four hooks gunicorn calls; one instance per ``gunicorn.conf.py``."""

    settings: LogSettings
    hub_address: str | None = None
    logging_config: dict[str, Any] | None = None
    hub: Any = None
    master_pid: int | None = None

    def on_starting(self, server: Any) -> None:
        """Master, once: start the hub (unless attaching to ``hub_address``) and publish its address."""
        with startup_errors():
            if self.hub_address is not None:
                self.hub_address = check_hub_reachable(self.hub_address)
            else:
                self.hub = start_owned_hub(self.settings, self.logging_config)
                self.hub_address = self.hub.address
            assert self.hub_address is not None
            os.environ[HUB_ADDRESS_ENV] = self.hub_address
            self.master_pid = os.getpid()

    def post_fork(self, server: Any, worker: Any) -> None:
        """Worker, right after fork: a client of its own (the master's socket and buffer are not ours)."""
        forget_inherited()
        address = self.hub_address or os.environ.get(HUB_ADDRESS_ENV)
        if address is None:
            say_loudly(
                f"gunicorn worker {os.getpid()} has no hub address (on_starting did not run?): "
                "set on_starting = _flocklog.on_starting in gunicorn.conf.py; this worker logs nowhere"
            )
            return
        install_root_handler(hub_handler(address, self.settings), self.settings.level)

    def worker_exit(self, server: Any, worker: Any) -> None:
        """Worker, on its way out (graceful or after a timeout kill by the master): send what is buffered."""
        drain_installed()

    def on_exit(self, server: Any) -> None:
        """Master, last: every worker has drained by now, so the hub can flush its files and stop."""
        if self.master_pid != os.getpid():
            return
        drain_installed()
        if self.hub is not None:
            stop_owned_hub(self.hub)
            self.hub = None


def hooks(
    *,
    log_file: str | os.PathLike[str] | None = "logs/app.log",
    level: str | int = "INFO",
    format: str = PID_TID_FORMAT,
    hub_address: str | None = None,
    logging_config: dict[str, Any] | None = None,
    **file_options: Unpack[FileOptions],
) -> GunicornHooks:
    """Build the hooks; checks every option and the log directory now, so a mistake stops gunicorn with one line.

    The file options (``when``, ``interval``, ``utc``, ``backup_count``, ``max_bytes``, ``compress``,
    ``max_age``, ``encoding``,
    ``file_mode``) are those of every flocklog entry point; ``when=None, max_bytes=...`` rotates by
    size only. With ``hub_address`` the workers send to a hub that already runs (``flocklog serve``) and the
    master starts none; with ``logging_config`` the hub's handlers come from that dictConfig instead of
    ``log_file``. For uWSGI use :mod:`flocklog.contrib.uwsgi`.
    """
    try:
        settings = log_settings(log_file, level=level, format=format, **file_options)
        if settings.files is not None:
            if hub_address is None and logging_config is None:
                settings.files.check_directory()
        elif hub_address is None and logging_config is None:
            raise ConfigError("nowhere to log: pass log_file='logs/app.log', a logging_config dict or a hub_address")
    except FlocklogError as exc:
        # gunicorn would print "Failed to read config file" and a traceback; one line is more useful.
        fail_startup(exc)
    return GunicornHooks(settings=settings, hub_address=hub_address, logging_config=logging_config)
