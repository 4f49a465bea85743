"""Celery workers logging into one set of rotating files: one ``setup(app)`` call wires every process role.

'hub' mode: the main worker process owns an in-process hub that owns the files; prefork children send to it.
'files' mode: every process writes the files directly through flocklog's process-safe handlers.
"""

from __future__ import annotations

import logging
import logging.config
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flocklog.contrib._setup import (
    PID_TID_FORMAT,
    LogSettings,
    Mode,
    check_hub_reachable,
    check_mode,
    drain_installed,
    forget_inherited,
    hub_handler,
    install_root_handler,
    log_settings,
    say_loudly,
    start_owned_hub,
    startup_errors,
    stop_owned_hub,
)
from flocklog.errors import ConfigError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from flocklog._filesettings import FileOptions

__all__ = ["CeleryLogging", "setup"]


@dataclass
class CeleryLogging:
    """What :func:`setup` decided, kept so the worker's signals act on it and tests can inspect it."""

    mode: Mode
    settings: LogSettings
    logging_config: dict[str, Any] | None
    hub_address: str | None
    level: str | int | None
    hub: Any = None
    owner_pid: int | None = None
    receivers: list[Any] = field(default_factory=list)

    # -- the worker's main process -----------------------------------------------------------------------------
    def on_setup_logging(self, loglevel: Any = None, **_: Any) -> None:
        """Celery's ``setup_logging``: connecting it is what stops Celery from configuring logging itself."""
        level = self.level if self.level is not None else (loglevel or "INFO")
        with startup_errors():
            if self.mode == "files":
                self._configure_files(level)
            else:
                self._configure_hub(level)
        self.owner_pid = os.getpid()

    def _configure_files(self, level: str | int) -> None:
        if self.logging_config is not None:
            logging.config.dictConfig(self.logging_config)
            return
        install_root_handler(self.settings.file_handler(), level)

    def _configure_hub(self, level: str | int) -> None:
        address = self.hub_address
        if address is not None:
            address = check_hub_reachable(address)
        else:
            self.hub = start_owned_hub(self.settings, self.logging_config)
            address = self.hub.address
        self.hub_address = address
        install_root_handler(hub_handler(address, self.settings), level)

    def on_worker_shutdown(self, **_: Any) -> None:
        """Warm and cold shutdown both end here after the pool is gone: drain our client, then stop the hub."""
        if self.owner_pid != os.getpid():
            return
        drain_installed()
        if self.hub is not None:
            stop_owned_hub(self.hub)
            self.hub = None

    # -- prefork children --------------------------------------------------------------------------------------
    def on_worker_process_init(self, **_: Any) -> None:
        """A fresh hub client per child: never reuse a socket or buffer that the parent also holds."""
        if self.mode != "hub":
            return
        if self.hub_address is None:
            # setup_logging never ran in the parent (another receiver claimed it, or setup() came after it).
            say_loudly(f"Celery child {os.getpid()} has no flocklog hub address: its records go nowhere flocklog owns")
            return
        level = logging.getLogger().level
        forget_inherited()
        install_root_handler(hub_handler(self.hub_address, self.settings), level)

    def on_worker_process_shutdown(self, **_: Any) -> None:
        """Billiard children leave with ``os._exit``: without this, records still buffered would be lost."""
        drain_installed()


def setup(
    app: Any,
    *,
    mode: str = "hub",
    logging_config: dict[str, Any] | None = None,
    log_file: str | os.PathLike[str] | None = "logs/celery.log",
    hub_address: str | None = None,
    level: str | int | None = None,
    format: str = PID_TID_FORMAT,
    **file_options: Unpack[FileOptions],
) -> CeleryLogging:
    """Make every process of ``app``'s workers log into one rotating file set, with no record lost.

    Call it once in the module that creates the Celery app (``celery -A`` imports it in the worker). It sets
    ``worker_hijack_root_logger=False`` and connects ``setup_logging`` (Celery then configures nothing itself),
    ``worker_process_init`` / ``worker_process_shutdown`` and ``worker_shutdown``.

    ``mode='hub'`` (default): the main worker process starts a hub that owns ``log_file`` (or the handlers of
    ``logging_config``) and every process sends to it; with ``hub_address`` the worker attaches to a hub that
    already runs (``flocklog serve``) instead. ``mode='files'``: every process writes ``log_file`` directly.
    ``level`` defaults to the worker's ``-l``. The file options (``when``, ``interval``, ``utc``,
    ``backup_count``, ``max_bytes``, ``compress``, ``max_age``, ``encoding``,
    ``file_mode``) are those of every flocklog entry
    point (:class:`flocklog._filesettings.FileSettings`); ``when=None, max_bytes=...`` rotates by size only.
    A bad value raises :class:`ConfigError` here, naming it.
    """
    from celery import Celery, signals

    if not isinstance(app, Celery):
        raise ConfigError(
            f"flocklog.contrib.celery.setup() needs the Celery app, got {type(app).__name__}: "
            "call it as setup(app) right after app = Celery(...)"
        )
    checked = check_mode(mode)
    settings = log_settings(log_file, level=level or "INFO", format=format, **file_options)
    if settings.files is None and logging_config is None and not (checked == "hub" and hub_address is not None):
        raise ConfigError("nowhere to log: pass log_file='logs/celery.log', a logging_config dict or a hub_address")

    previous = getattr(app, "flocklog_logging", None)
    if isinstance(previous, CeleryLogging):
        # A second setup() (a re-imported module, a test) replaces the first: two hubs would both own the files.
        for signal, receiver in previous.receivers:
            signal.disconnect(receiver)
    app.conf.worker_hijack_root_logger = False
    state = CeleryLogging(
        mode=checked, settings=settings, logging_config=logging_config, hub_address=hub_address, level=level
    )
    pairs = [
        (signals.setup_logging, state.on_setup_logging),
        (signals.worker_process_init, state.on_worker_process_init),
        (signals.worker_process_shutdown, state.on_worker_process_shutdown),
        (signals.worker_shutdown, state.on_worker_shutdown),
    ]
    for signal, receiver in pairs:
        signal.connect(receiver, weak=False)
    state.receivers = pairs
    app.flocklog_logging = state  # type: ignore[attr-defined]  # our marker on the user's app, for tests
    return state
