"""What every framework integration shares: who owns the files or the hub, and how the other processes reach it.

The builders here make handlers and dictConfig fragments; the framework modules only decide *when* to call them.
The file options themselves live in :mod:`flocklog._filesettings` (one definition for every entry point), the
root-handler swap in :mod:`flocklog._roothandler`. Nothing here imports a framework.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn, cast

from flocklog._configure import HUB_ADDRESS_ENV, build_file_handler, build_hub_handler, make_formatter
from flocklog._configure import hub_address as canonical_address
from flocklog._filesettings import FileOptions, FileSettings
from flocklog._roothandler import (
    PID_TID_FORMAT,
    close_quietly,
    drain_installed,
    forget_inherited,
    install_root_handler,
    installed_handlers,
    level_number,
)
from flocklog.errors import ConfigError, FlocklogError, HubError

__all__ = [
    "HUB_ADDRESS_ENV",
    "PID_TID_FORMAT",
    "FileOptions",
    "FileSettings",
    "LogSettings",
    "Mode",
    "check_hub_reachable",
    "check_mode",
    "close_quietly",
    "drain_installed",
    "fail_startup",
    "forget_inherited",
    "hub_handler",
    "install_root_handler",
    "installed_handlers",
    "level_number",
    "log_settings",
    "logging_dict",
    "private_hub_address",
    "say_loudly",
    "start_owned_hub",
    "startup_errors",
    "stop_owned_hub",
]

Mode = Literal["hub", "files"]
Style = Literal["%", "{", "$"]

_log = logging.getLogger("flocklog")


@dataclass(frozen=True)
class LogSettings:
    """What an integration writes: the file set (None when a hub elsewhere owns it), the level and the line format."""

    files: FileSettings | None
    level: str | int = "INFO"
    format: str = PID_TID_FORMAT
    style: Style = "{"

    def formatter(self) -> logging.Formatter:
        return make_formatter(self.format, self.style)

    def file_handler(self, *, for_hub: bool = False) -> logging.Handler:
        """The file handler; ``for_hub`` leaves it unformatted, as hub clients send text already formatted."""
        if self.files is None:
            raise ConfigError("no log file: pass log_file='logs/app.log'")
        self.files.check_directory()
        handler = build_file_handler(self.files)
        if not for_hub:
            handler.setFormatter(self.formatter())
        return handler


def log_settings(
    log_file: str | os.PathLike[str] | None,
    *,
    level: str | int = "INFO",
    format: str = PID_TID_FORMAT,
    style: Style = "{",
    **options: Any,
) -> LogSettings:
    """Parse an entry point's arguments; every bad value is one ConfigError naming it, before anything starts."""
    level_number(level)
    make_formatter(format, style)
    files = FileSettings.parse(log_file, **options) if log_file is not None else None
    return LogSettings(files=files, level=level, format=format, style=style)


def logging_dict(
    *,
    mode: Mode,
    settings: LogSettings,
    hub_address: str | None = None,
    loggers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A complete dictConfig (Django's ``LOGGING``) that sends the root logger to flocklog.

    ``files`` mode: every process writes the rotating files directly through flocklog's file handlers.
    ``hub`` mode: every process sends to the hub at ``hub_address`` (default: ``$FLOCKLOG_HUB_ADDRESS`` at the
    moment the handler is built) through ``flocklog.HubHandler``; the hub owns the files.
    """
    if mode == "files":
        if settings.files is None:
            raise ConfigError("mode 'files' needs a log file: pass log_file='logs/app.log'")
        handler: dict[str, Any] = settings.files.handler_config(formatter="flocklog")
    elif mode == "hub":
        handler = {"class": "flocklog.HubHandler", "formatter": "flocklog"}
        if hub_address is not None:
            handler["address"] = canonical_address(hub_address)
    else:
        raise ConfigError(f"unknown mode {mode!r}: use 'hub' or 'files'")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "flocklog": {"()": "flocklog.formatting.make_formatter", "format": settings.format, "style": settings.style}
        },
        "handlers": {"flocklog": handler},
        "root": {"handlers": ["flocklog"], "level": settings.level},
        "loggers": loggers or {},
    }


def check_mode(mode: str) -> Mode:
    if mode not in ("hub", "files"):
        raise ConfigError(f"unknown mode {mode!r}: use mode='hub' (one hub process owns the files) or 'files'")
    return cast(Mode, mode)


def check_hub_reachable(address: str, timeout: float = 2.0) -> str:
    """Connect once to ``address`` so a typo or a hub that is not running fails at start-up, not at record 1.

    Returns the address in canonical form (``tcp:host:port`` becomes ``tcp://host:port``).
    """
    from flocklog.hub._address import parse_address

    canonical = canonical_address(address)  # ConfigError naming the accepted forms
    parsed = parse_address(canonical)
    try:
        if parsed.kind == "unix":
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(parsed.path)
        else:
            with socket.create_connection((parsed.host, parsed.port), timeout=timeout):
                pass
    except OSError as exc:
        raise HubError(
            f"no log hub answers at {address} ({exc.__class__.__name__}: {exc}): start it first "
            f"('flocklog serve --config logging.json --unix PATH') or fix {HUB_ADDRESS_ENV}"
        ) from None
    return canonical


def private_hub_address() -> str:
    """A fresh unix socket path in a private directory: only this user's processes can reach the hub."""
    directory = tempfile.mkdtemp(prefix="flocklog-hub-")
    return f"unix:{directory}/hub.sock"


def start_owned_hub(settings: LogSettings | None, logging_config: dict[str, Any] | None = None) -> Any:
    """Start the in-process hub that owns the files and publish its address to every later child process.

    The hub writes through ``logging_config``'s root handlers when given, else through ``settings``' file handler.
    """
    from flocklog.hub import start_hub

    if logging_config is not None:
        hub = start_hub(config=logging_config, address=private_hub_address())
    elif settings is not None and settings.files is not None:
        hub = start_hub([settings.file_handler(for_hub=True)], address=private_hub_address())
    else:
        raise ConfigError("a hub needs somewhere to write: pass log_file=... or a logging_config dict")
    os.environ[HUB_ADDRESS_ENV] = hub.address
    return hub


def stop_owned_hub(hub: Any, timeout: float = 10.0) -> None:
    """Stop a hub from :func:`start_owned_hub` and remove its private socket directory."""
    hub.stop(timeout)
    address = str(hub.address)
    if address.startswith("unix:"):
        directory = Path(address[len("unix:") :]).parent
        if directory.name.startswith("flocklog-hub-"):
            with contextlib.suppress(OSError):
                directory.rmdir()


def hub_handler(address: str | None, settings: LogSettings | None, *, handle_sigterm: bool = True) -> logging.Handler:
    handler = build_hub_handler(address, handle_sigterm=handle_sigterm)
    # Clients format (the hub writes their text as is), so the format lives here, never on the hub's handler.
    handler.setFormatter(settings.formatter() if settings is not None else make_formatter(PID_TID_FORMAT, "{"))
    return handler


def say_loudly(message: str) -> None:
    """A warning a user cannot miss: on stderr (servers keep it) and on the ``flocklog`` logger."""
    print(f"flocklog: WARNING: {message}", file=sys.stderr, flush=True)
    _log.warning("%s", message)


def fail_startup(exc: FlocklogError) -> NoReturn:
    """End a server's start-up with one line on stderr: frameworks would bury the message in a traceback."""
    print(f"flocklog: error: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(2)


@contextmanager
def startup_errors() -> Iterator[None]:
    try:
        yield
    except FlocklogError as exc:
        fail_startup(exc)
