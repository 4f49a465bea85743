"""Framework integrations (Django, Celery, gunicorn, uvicorn) and the pieces they share.

Each integration answers the same two questions: which process owns the files (or the hub), and how every other
process reaches them. The helpers here build the handlers and dictConfig fragments; the framework modules only
decide *when* to call them. Nothing here imports a framework.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn, cast

from flocklog.errors import ConfigError, FlocklogError, HubError

Mode = Literal["hub", "files"]

HUB_ADDRESS_ENV = "FLOCKLOG_HUB_ADDRESS"

#: The format asked for most: level, time, module, then process and thread ids so interleaved writers stay legible.
PID_TID_FORMAT = "{levelname} {asctime} {module} [PID:{process}, TID:{thread}] {message}"

# Handlers this package installed carry this attribute, so a second integration in the same process (Django's
# ready() inside a Celery worker) sees the first one's work and does not log every record twice.
_MARK = "_flocklog_contrib"

#: logging's module lock (addHandler/removeHandler take it); private, but present from 3.10 to 3.14.
_LOGGING_LOCK: Any = getattr(logging, "_lock", None) or contextlib.nullcontext()


@dataclass(frozen=True)
class FileSettings:
    """Where and how the owner of the files writes them; one value object shared by every integration."""

    log_file: str
    when: str = "midnight"
    interval: int = 1
    backup_count: int = 7
    max_bytes: int = 0
    utc: bool = False
    compress: bool = False
    level: str | int = "INFO"
    format: str = PID_TID_FORMAT
    style: Literal["%", "{", "$"] = "{"

    def check(self) -> None:
        """Fail at start-up, in one sentence, on what would otherwise be a traceback at the first record."""
        directory = Path(self.log_file).expanduser().resolve().parent
        if not directory.is_dir():
            raise ConfigError(
                f"log directory {str(directory)!r} does not exist: create it (mkdir -p {directory}) "
                "or point log_file elsewhere"
            )
        if not os.access(directory, os.W_OK | os.X_OK):
            raise ConfigError(f"log directory {str(directory)!r} is not writable by uid {os.getuid()}: fix its mode")
        if isinstance(self.level, str) and not isinstance(logging.getLevelName(self.level.upper()), int):
            raise ConfigError(f"unknown log level {self.level!r}: use DEBUG, INFO, WARNING, ERROR or CRITICAL")

    def handler_config(self) -> dict[str, Any]:
        """The dictConfig entry of the file handler (class path, so it also works in a plain ``LOGGING``)."""
        return {
            "class": "flocklog.TimedRotatingFileHandler",
            "filename": str(Path(self.log_file).expanduser().resolve()),
            "when": self.when,
            "interval": self.interval,
            "backupCount": self.backup_count,
            "maxBytes": self.max_bytes,
            "utc": self.utc,
            "compress": self.compress,
            "encoding": "utf-8",
            "formatter": "flocklog",
        }

    def formatter(self) -> logging.Formatter:
        return logging.Formatter(self.format, style=self.style)

    def build_handler(self, *, for_hub: bool = False) -> logging.Handler:
        """The file handler; ``for_hub`` leaves it unformatted, as hub clients send text already formatted."""
        from flocklog.files.handlers import TimedRotatingFileHandler

        self.check()
        handler = TimedRotatingFileHandler(
            str(Path(self.log_file).expanduser().resolve()),
            when=self.when,
            interval=self.interval,
            backupCount=self.backup_count,
            encoding="utf-8",
            utc=self.utc,
            maxBytes=self.max_bytes,
            compress=self.compress,
        )
        if not for_hub:
            handler.setFormatter(self.formatter())
        return handler


def level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ConfigError(f"unknown log level {level!r}: use DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return number


def logging_dict(
    *,
    mode: Mode,
    files: FileSettings | None = None,
    hub_address: str | None = None,
    loggers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A complete dictConfig (Django's ``LOGGING``) that sends the root logger to flocklog.

    ``files`` mode: every process writes the rotating files directly through ``flocklog.TimedRotatingFileHandler``.
    ``hub`` mode: every process sends to the hub at ``hub_address`` (default: ``$FLOCKLOG_HUB_ADDRESS`` at the
    moment the handler is built) through ``flocklog.HubHandler``; the hub owns the files.
    """
    level: str | int = files.level if files is not None else "INFO"
    if mode == "files":
        if files is None:
            raise ConfigError("mode 'files' needs a log file: pass log_file='logs/app.log'")
        handler: dict[str, Any] = files.handler_config()
    elif mode == "hub":
        handler = {"class": "flocklog.HubHandler"}
        if hub_address is not None:
            handler["address"] = hub_address
    else:
        raise ConfigError(f"unknown mode {mode!r}: use 'hub' or 'files'")
    formatter = files.format if files is not None else PID_TID_FORMAT
    style = files.style if files is not None else "{"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"flocklog": {"format": formatter, "style": style}},
        "handlers": {"flocklog": handler},
        "root": {"handlers": ["flocklog"], "level": level},
        "loggers": loggers or {},
    }


def check_mode(mode: str) -> Mode:
    if mode not in ("hub", "files"):
        raise ConfigError(f"unknown mode {mode!r}: use mode='hub' (one hub process owns the files) or 'files'")
    return cast(Mode, mode)


def check_hub_reachable(address: str, timeout: float = 2.0) -> None:
    """Connect once to ``address`` so a typo or a hub that is not running fails at start-up, not at record 1."""
    from flocklog.hub._address import parse_address

    parsed = parse_address(address)  # ConfigError naming the accepted forms
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


def private_hub_address() -> str:
    """A fresh unix socket path in a private directory: only this user's processes can reach the hub."""
    directory = tempfile.mkdtemp(prefix="flocklog-hub-")
    return f"unix:{directory}/hub.sock"


def start_owned_hub(files: FileSettings | None, logging_config: dict[str, Any] | None = None) -> Any:
    """Start the in-process hub that owns the files and publish its address to every later child process.

    The hub writes through ``logging_config``'s root handlers when given, else through ``files``' handler.
    """
    from flocklog.hub import start_hub

    if logging_config is not None:
        hub = start_hub(config=logging_config, address=private_hub_address())
    elif files is not None:
        hub = start_hub([files.build_handler(for_hub=True)], address=private_hub_address())
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


def hub_handler(address: str | None, files: FileSettings | None) -> logging.Handler:
    from flocklog.hub.client import HubHandler

    handler = HubHandler(address)
    # Clients format (the hub writes their text as is), so the format lives here, never on the hub's handler.
    handler.setFormatter(files.formatter() if files is not None else logging.Formatter(PID_TID_FORMAT, style="{"))
    return handler


def install_root_handler(
    handler: logging.Handler,
    level: str | int,
    *,
    replace: bool = True,
    also: Callable[[logging.Handler], bool] | None = None,
) -> bool:
    """Put ``handler`` on the root logger, replacing (or, with ``replace=False``, deferring to) earlier ones.

    Earlier ones are the handlers this package installed, plus those ``also`` accepts. Returns False when
    ``replace`` is off and another integration already installed a flocklog handler.
    """
    root = logging.getLogger()
    setattr(handler, _MARK, True)
    # One swap of the list, under the lock addHandler() takes: a thread logging meanwhile sees the old handlers or
    # the new one, never neither (removing, closing, then adding lost every record logged in between).
    with _LOGGING_LOCK:
        ours = [h for h in root.handlers if getattr(h, _MARK, False) or (also is not None and also(h))]
        if ours and not replace:
            return False
        root.handlers = [h for h in root.handlers if h not in ours] + [handler]
    root.setLevel(level_number(level))
    for old in ours:  # outside the lock: a hub client's close() drains, which may take seconds
        _close_quietly(old)
    return True


def installed_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if getattr(h, _MARK, False)]


def drain_installed() -> None:
    """Flush and close what this package installed: the hub client sends what it holds, files are synced."""
    root = logging.getLogger()
    for handler in installed_handlers():
        root.removeHandler(handler)
        _close_quietly(handler)


def _close_quietly(handler: logging.Handler) -> None:
    try:
        handler.flush()
        handler.close()
    except Exception as exc:  # a failing close must not stop the shutdown of the host; say so once
        print(f"flocklog: closing {handler!r} failed: {exc}", file=sys.stderr)


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
