"""gunicorn server hooks: the master owns the hub, every worker sends to it, nothing is lost at exit.

In ``gunicorn.conf.py``::

    from flocklog.contrib.gunicorn import hooks

    _flocklog = hooks(log_file="logs/app.log", when="midnight", backup_count=7)
    on_starting, post_fork, worker_exit, on_exit = (
        _flocklog.on_starting, _flocklog.post_fork, _flocklog.worker_exit, _flocklog.on_exit
    )

``--preload`` imports the application in the master *before* ``on_starting`` runs, so an application that
attaches its own handlers at import time would attach them before the hub exists; leave the handlers to
``post_fork`` (which installs a fresh client in every worker, with or without ``--preload``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from flocklog.contrib import (
    HUB_ADDRESS_ENV,
    PID_TID_FORMAT,
    FileSettings,
    check_hub_reachable,
    drain_installed,
    fail_startup,
    hub_handler,
    install_root_handler,
    installed_handlers,
    start_owned_hub,
    startup_errors,
    stop_owned_hub,
)
from flocklog.errors import FlocklogError

__all__ = ["GunicornHooks", "hooks"]


@dataclass
class GunicornHooks:
    """The four hooks gunicorn calls; one instance per ``gunicorn.conf.py``."""

    files: FileSettings | None
    hub_address: str | None = None
    logging_config: dict[str, Any] | None = None
    hub: Any = None
    master_pid: int | None = None

    def on_starting(self, server: Any) -> None:
        """Master, once: start the hub (unless attaching to ``hub_address``) and publish its address."""
        with startup_errors():
            if self.hub_address is not None:
                check_hub_reachable(self.hub_address)
            else:
                self.hub = start_owned_hub(self.files, self.logging_config)
                self.hub_address = self.hub.address
            assert self.hub_address is not None
            os.environ[HUB_ADDRESS_ENV] = self.hub_address
            self.master_pid = os.getpid()

    def post_fork(self, server: Any, worker: Any) -> None:
        """Worker, right after fork: a client of its own (the master's socket and buffer are not ours)."""
        root = logging.getLogger()
        for inherited in installed_handlers():
            root.removeHandler(inherited)
        level = self.files.level if self.files is not None else "INFO"
        install_root_handler(hub_handler(self.hub_address, self.files), level)

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
    when: str = "midnight",
    interval: int = 1,
    backup_count: int = 7,
    max_bytes: int = 0,
    compress: bool = False,
    utc: bool = False,
    level: str | int = "INFO",
    format: str = PID_TID_FORMAT,
    hub_address: str | None = None,
    logging_config: dict[str, Any] | None = None,
) -> GunicornHooks:
    """Build the hooks; checks the log directory now, so a mistake stops gunicorn with one line on stderr.

    With ``hub_address`` the workers send to a hub that already runs (``flocklog serve``) and the master starts
    none; with ``logging_config`` the hub's handlers come from that dictConfig instead of ``log_file``.
    For uWSGI (which forks without gunicorn's hooks) call ``post_fork(None, None)`` from a
    ``uwsgidecorators.postfork`` function and start the hub with ``flocklog serve`` beside it.
    """
    try:
        files = None
        if log_file is not None:
            files = FileSettings(
                log_file=os.fspath(log_file),
                when=when,
                interval=interval,
                backup_count=backup_count,
                max_bytes=max_bytes,
                utc=utc,
                compress=compress,
                level=level,
                format=format,
            )
            if hub_address is None and logging_config is None:
                files.check()
        elif hub_address is None and logging_config is None:
            from flocklog.errors import ConfigError

            raise ConfigError("nowhere to log: pass log_file='logs/app.log', a logging_config dict or a hub_address")
    except FlocklogError as exc:
        # gunicorn would print "Failed to read config file" and a traceback; one line is more useful.
        fail_startup(exc)
    return GunicornHooks(files=files, hub_address=hub_address, logging_config=logging_config)
