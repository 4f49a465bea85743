"""uvicorn (and FastAPI) behind one hub: spawned workers reach it through ``$FLOCKLOG_HUB_ADDRESS``.

``uvicorn --workers N`` starts its workers with *spawn*, not fork, so nothing set up in the supervisor survives
into them except the environment. The hub therefore runs as a process the wrapper supervises (``python -m
flocklog.contrib.uvicorn ... -- app:app --workers 4``, see :class:`HubChild`) or as ``flocklog serve``, and every
worker builds its client from the address in the environment, through :func:`log_config` (given to uvicorn as
``--log-config``) or :func:`attach` (called in the application module). ``--mode files`` needs no hub: every
worker's ``--log-config`` (:func:`files_config`) gives it flocklog's process-safe file handler, one ``write()`` per
record.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from typing import Any

from flocklog.contrib._hubchild import HubChild
from flocklog.contrib._setup import (
    HUB_ADDRESS_ENV,
    PID_TID_FORMAT,
    LogSettings,
    check_hub_reachable,
    fail_startup,
    hub_handler,
    install_root_handler,
    level_number,
    log_settings,
    logging_dict,
    say_loudly,
)
from flocklog.errors import ConfigError, FlocklogError

__all__ = ["attach", "files_config", "log_config", "main"]

_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "fastapi")


def log_config(
    *, address: str | None = None, level: str | int = "INFO", format: str = PID_TID_FORMAT
) -> dict[str, Any]:
    """A dictConfig for ``uvicorn.run(log_config=...)`` or a JSON ``--log-config`` file: everything to the hub.

    Without ``address`` each process reads ``$FLOCKLOG_HUB_ADDRESS`` when it configures logging, which is what
    spawned workers need. uvicorn's own loggers propagate to the root so the access log lands in the same file.
    """
    level_name = logging.getLevelName(level_number(level))
    handler: dict[str, Any] = {"class": "flocklog.HubHandler", "formatter": "flocklog"}
    if address is not None:
        handler["address"] = address
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"flocklog": {"()": "flocklog.formatting.make_formatter", "format": format, "style": "{"}},
        "handlers": {"flocklog": handler},
        "loggers": {name: {"handlers": [], "level": level_name, "propagate": True} for name in _UVICORN_LOGGERS},
        "root": {"handlers": ["flocklog"], "level": level_name},
    }


def files_config(settings: LogSettings) -> dict[str, Any]:
    """A dictConfig that has every worker write the file set itself through flocklog's process-safe handler.

    No hub, no socket: each record costs one ``write()`` in the worker that logged it, as with the stdlib's
    handler, and uvicorn's loggers propagate to the root as in :func:`log_config`.
    """
    if settings.files is None:
        raise ConfigError("files mode needs a log file: pass --log-file logs/app.log")
    settings.files.check_directory()  # a missing directory stops the wrapper now, not every worker later
    level_name = logging.getLevelName(level_number(settings.level))
    loggers = {name: {"handlers": [], "level": level_name, "propagate": True} for name in _UVICORN_LOGGERS}
    return logging_dict(mode="files", settings=settings, loggers=loggers)


def attach(*, address: str | None = None, level: str | int = "INFO", format: str = PID_TID_FORMAT) -> bool:
    """Send this process's root logger to the hub; a no-op (False) if a flocklog handler is already there.

    For application modules that cannot choose uvicorn's ``--log-config``. Raises :class:`HubError` when no hub
    answers, so a worker that would lose every record does not start.
    """
    address = address or os.environ.get(HUB_ADDRESS_ENV)
    if not address:
        raise ConfigError(
            f"no hub address: set {HUB_ADDRESS_ENV} (the wrapper 'python -m flocklog.contrib.uvicorn' does) "
            "or pass address='unix:/path/hub.sock'"
        )
    address = check_hub_reachable(address)
    settings = LogSettings(files=None, level=level, format=format)
    return install_root_handler(hub_handler(address, settings), level, replace=False)


def main(argv: list[str] | None = None) -> int:
    """``python -m flocklog.contrib.uvicorn [flocklog options] -- [uvicorn arguments]``.

    Starts a hub process that owns the log file (:class:`HubChild`), exports its address, points uvicorn's
    ``--log-config`` at the hub (unless given) and runs uvicorn in this process; the hub stops, drained, after
    uvicorn and all its workers have exited.
    """
    parser = argparse.ArgumentParser(prog="python -m flocklog.contrib.uvicorn", description=main.__doc__)
    parser.add_argument("--log-file", default="logs/app.log")
    parser.add_argument("--when", default="midnight", help="S, M, H, D, midnight, W0-W6, or 'none' (size only)")
    parser.add_argument("--interval", default=1)
    parser.add_argument("--utc", action="store_true")
    parser.add_argument("--backup-count", default=7)
    parser.add_argument("--max-bytes", default=0, help="also rotate at this size; required with --when none")
    parser.add_argument("--compress", action="store_true")
    parser.add_argument("--max-age", default=None, help="delete archives older than this many seconds")
    parser.add_argument("--encoding", default="utf-8")
    parser.add_argument("--file-mode", default=None, help="permission bits of the log files, octal (e.g. 0640)")
    parser.add_argument("--level", default="INFO")
    parser.add_argument(
        "--mode",
        default="hub",
        choices=("hub", "files"),
        help="hub: a hub process started (and stopped) by this one owns the file; files: every worker writes it",
    )
    parser.add_argument("--hub-address", default=None, help="attach to this running hub instead of starting one")
    parser.add_argument("uvicorn_args", nargs=argparse.REMAINDER, help="arguments for uvicorn, after --")
    args = parser.parse_args(argv)
    rest = list(args.uvicorn_args)
    if rest and rest[0] == "--":
        rest = rest[1:]

    hub: HubChild | None = None
    config_dir = tempfile.mkdtemp(prefix="flocklog-uvicorn-")
    try:
        if args.mode == "files" and args.hub_address is not None:
            raise ConfigError("--mode files writes the file from every worker: it takes no --hub-address")
        if args.hub_address is not None:
            address = check_hub_reachable(args.hub_address)
        else:
            settings = log_settings(
                args.log_file,
                level=args.level,
                when=args.when,
                interval=args.interval,
                utc=args.utc,
                backup_count=args.backup_count,
                max_bytes=args.max_bytes,
                compress=args.compress,
                max_age=args.max_age,
                encoding=args.encoding,
                file_mode=args.file_mode,
            )
            if args.mode == "files":
                config = files_config(settings)
            else:
                hub = HubChild(settings)
                hub.start()
                address = hub.address
        if hub is not None or args.hub_address is not None:
            os.environ[HUB_ADDRESS_ENV] = address
            config = log_config(level=args.level)
        if "--log-config" not in rest:
            path = os.path.join(config_dir, "log_config.json")
            with open(path, "w", encoding="utf-8") as fh:
                json.dump(config, fh)
            rest += ["--log-config", path]
    except FlocklogError as exc:
        if hub is not None:
            hub.stop()
        shutil.rmtree(config_dir, ignore_errors=True)
        fail_startup(exc)

    from uvicorn.main import main as uvicorn_cli

    command: Any = uvicorn_cli  # a click.Command; the stubs see the module-level function it wraps
    try:
        command.main(args=rest, prog_name="uvicorn", standalone_mode=False)
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        root = logging.getLogger()
        for handler in list(root.handlers):  # the supervisor's own client drains before the hub stops
            root.removeHandler(handler)
            handler.close()
        if hub is not None:
            code = hub.stop()
            if code is None:
                say_loudly("the log hub was killed after its drain timeout: look above for what it could not write")
            elif code != 0:
                say_loudly(f"the log hub exited with {code}: look above for what it could not write")
        shutil.rmtree(config_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
