"""The root logger's flocklog handler: installed, swapped and drained in one step, with the shared line format.

Bottom layer (stdlib ``logging`` only), because both ``configure()`` and every framework integration put a handler
on the root logger and must agree on which handlers are "ours" -- otherwise a second set-up in one process (Django's
``ready()`` inside a Celery worker, a repeated ``configure()``) logs every record twice.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable
from typing import Any

__all__ = [
    "PID_TID_FORMAT",
    "close_quietly",
    "drain_installed",
    "forget_inherited",
    "install_root_handler",
    "installed_handlers",
    "is_flocklog_handler",
    "level_number",
]

#: The format asked for most: level, time, module, then process and thread ids so interleaved writers stay legible.
PID_TID_FORMAT = "{levelname} {asctime} {module} [PID:{process}, TID:{thread}] {message}"

# Handlers flocklog installed carry this attribute, so a second integration in the same process sees the first's work.
_MARK = "_flocklog_contrib"

#: logging's module lock (addHandler/removeHandler take it); private, but present from 3.10 to 3.14.
_LOGGING_LOCK: Any = getattr(logging, "_lock", None) or contextlib.nullcontext()


def level_number(level: str | int) -> int:
    """``"info"``/``"INFO"``/``20`` as a number; a ConfigError naming the accepted names otherwise."""
    from flocklog.errors import ConfigError

    if isinstance(level, int) and not isinstance(level, bool):
        return level
    number = logging.getLevelName(str(level).upper())
    if not isinstance(number, int):
        raise ConfigError(f"unknown log level {level!r}: use DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return number


def is_flocklog_handler(handler: logging.Handler) -> bool:
    """A flocklog handler that dictConfig (or the user) put on the root: left there, every record goes out twice."""
    return type(handler).__module__.startswith("flocklog.")


def install_root_handler(
    handler: logging.Handler,
    level: str | int,
    *,
    replace: bool = True,
    also: Callable[[logging.Handler], bool] | None = None,
) -> bool:
    """Put ``handler`` on the root logger, replacing (or, with ``replace=False``, deferring to) earlier ones.

    Earlier ones are the handlers flocklog installed, plus those ``also`` accepts. Returns False when ``replace``
    is off and another integration already installed a flocklog handler.
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
        close_quietly(old)
    return True


def installed_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if getattr(h, _MARK, False)]


def forget_inherited() -> None:
    """Take the handlers inherited over a fork off the root logger, without closing them.

    Closing could flush what belongs to the parent; the fork reset already emptied their buffers.
    """
    root = logging.getLogger()
    for inherited in installed_handlers():
        root.removeHandler(inherited)


def drain_installed() -> None:
    """Flush and close what flocklog installed: the hub client sends what it holds, files are synced."""
    root = logging.getLogger()
    for handler in installed_handlers():
        root.removeHandler(handler)
        close_quietly(handler)


def close_quietly(handler: logging.Handler) -> None:
    try:
        handler.flush()
        handler.close()
    except Exception as exc:  # a failing close must not stop the shutdown of the host; say so once
        print(f"flocklog: closing {handler!r} failed: {exc}", file=sys.stderr)
