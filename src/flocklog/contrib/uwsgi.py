"""uWSGI workers logging into one rotating set: ``install()`` once in the WSGI module, any uWSGI process model.

uWSGI forks its workers from C, so Python's ``os.register_at_fork`` hooks do not run there, and with
``--lazy-apps`` the application (and any ``@postfork`` it registers) is imported only *after* the fork -- the
recipe that registered a ``@postfork`` function then installed nothing and lost every record without a word.
:func:`install` looks at where it runs instead of trusting one hook:

- in the master before the fork (no ``--lazy-apps``): a post-fork hook that gives every worker a fresh handler.
  Until the fork the master only keeps its records in memory, with no thread and no socket: uWSGI forks from C,
  so a thread running in the master at that moment leaves a ghost in every worker (measured: workers that hung
  at shutdown until uWSGI killed them). The first worker to claim them (an ``O_EXCL`` marker file in the temp
  directory) logs the master's records once; the others drop their copy;
- in a worker (``--lazy-apps``, or called lazily): a handler now, in this process;
- after every request it checks that this worker's handler is its own, and if the post-fork hook never ran (a
  ``uwsgi.post_fork_hook`` assigned over ours, say) it says so loudly on stderr and installs one there and then.

``mode='files'``: every worker writes the files through flocklog's process-safe handlers. ``mode='hub'``: every
worker sends to a hub that runs beside uWSGI (``flocklog serve --config logging.json --unix run/hub.sock``; build
``logging.json`` with :func:`hub_config`), at ``hub_address`` or ``$FLOCKLOG_HUB_ADDRESS``. Without
``--enable-threads`` uWSGI never lets a Python thread run while the worker waits for a request, so in hub mode the
worker's client is drained at the end of each request instead (said once at start; add ``--enable-threads``).
"""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flocklog.contrib._setup import (
    HUB_ADDRESS_ENV,
    PID_TID_FORMAT,
    LogSettings,
    check_hub_reachable,
    check_mode,
    drain_installed,
    forget_inherited,
    hub_handler,
    install_root_handler,
    log_settings,
    say_loudly,
)
from flocklog.errors import ConfigError, FlocklogError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from flocklog._filesettings import FileOptions

__all__ = ["UwsgiLogging", "hub_config", "install", "postfork"]

_DRAIN_AFTER_REQUEST = 5.0  # seconds a request's end may wait for its records to reach the hub (threads off)
_PRE_FORK_CAPACITY = 10000  # records the master keeps before the fork; more are counted and reported


class _PreForkBuffer(logging.Handler):
    """The master's records before the fork: kept in memory (no thread, no descriptor) for one worker to log."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.dropped = 0
        self.token = uuid.uuid4().hex

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) >= _PRE_FORK_CAPACITY:
            self.dropped += 1
            return
        record.getMessage()  # args are bound now, as a QueueHandler does, in case they change before the fork
        self.records.append(record)

    def hand_over(self, handler: logging.Handler) -> None:
        """In a worker: log the master's records through ``handler`` if this worker is the first to claim them."""
        records, self.records = self.records, []
        if not records and not self.dropped:
            return
        marker = os.path.join(tempfile.gettempdir(), f"flocklog-uwsgi-{self.token}")
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            return  # another worker (or an earlier generation of this one) logged them
        for record in records:
            handler.handle(record)
        if self.dropped:
            say_loudly(f"the uWSGI master logged {self.dropped} records more than flocklog keeps before the fork")


def _uwsgi() -> Any:
    """The embedded ``uwsgi`` module, or None outside a uWSGI server (tests, ``manage.py``, a plain script)."""
    try:
        return importlib.import_module("uwsgi")  # exists only inside a uWSGI process
    except ImportError:
        return None


def _option(uwsgi: Any, name: str) -> bool:
    value = uwsgi.opt.get(name)
    return value not in (None, False, b"", b"0", b"false", "false", "0")


@dataclass
class UwsgiLogging:
    """What :func:`install` decided; one per process, replaced by a later ``install()``."""

    mode: str
    settings: LogSettings
    hub_address: str | None
    drain_after_request: bool = False
    handler: logging.Handler | None = None
    pid: int | None = None
    pre_fork: _PreForkBuffer | None = None

    def hold_until_fork(self) -> None:
        """In the master before the fork: keep records in memory (see the module docstring for why)."""
        self.pre_fork = _PreForkBuffer()
        self.pre_fork.setLevel(logging.NOTSET)
        install_root_handler(self.pre_fork, self.settings.level)
        self.pid = os.getpid()

    def install_here(self) -> None:
        """A handler of this process's own on the root logger (the inherited one, if any, is forgotten)."""
        forget_inherited()
        files = self.mode == "files"
        # uWSGI's own signal handlers run its workers (SIGTERM is a reload there): the client must not take SIGTERM.
        handler = (
            self.settings.file_handler()
            if files
            else hub_handler(self.hub_address, self.settings, handle_sigterm=False)
        )
        install_root_handler(handler, self.settings.level)
        self.handler = handler
        self.pid = os.getpid()

    def after_fork(self) -> None:
        """uWSGI's post-fork hook, in every worker (and mule) of a master that imported the application."""
        try:
            self.install_here()
            if self.pre_fork is not None and self.handler is not None:
                self.pre_fork.hand_over(self.handler)
        except Exception as exc:  # never stop a worker from serving; say, loudly, that it logs nowhere
            say_loudly(f"uWSGI worker {os.getpid()} could not install its flocklog handler: {exc}")

    def after_request(self) -> None:
        """After each request: the post-fork hook really ran here; with threads off, the records reached the hub."""
        if self.pid != os.getpid():
            say_loudly(
                f"uWSGI worker {os.getpid()} still had the master's flocklog handler after its first request: "
                "flocklog's post-fork hook did not run (was uwsgi.post_fork_hook replaced?); installing one now"
            )
            self.after_fork()
        if self.drain_after_request and self.handler is not None:
            drain = getattr(self.handler, "drain", None)
            if drain is not None:
                drain(_DRAIN_AFTER_REQUEST)


_STATE: UwsgiLogging | None = None
_HOOKED: set[str] = set()


def _after_fork_hook() -> None:
    if _STATE is not None:
        _STATE.after_fork()


def _after_request_hook() -> None:
    if _STATE is not None:
        _STATE.after_request()


def _at_exit_hook() -> None:
    """uWSGI's ``atexit`` in a worker leaving (shutdown, reload, max-requests): send what is buffered."""
    if _STATE is not None and _STATE.pid == os.getpid():
        drain_installed()


def _register_postfork(uwsgi: Any, function: Any) -> None:
    """Add to uWSGI's post-fork functions through ``uwsgidecorators`` when it can (it replaces the hook itself)."""
    if uwsgi.masterpid() != 0:
        decorators: Any = importlib.import_module("uwsgidecorators")  # ships with uWSGI; needs the master
        decorators.postfork_chain.append(function)
    else:
        _chain(uwsgi, "post_fork_hook", function)


def _chain(uwsgi: Any, name: str, ours: Any) -> None:
    """Set ``uwsgi.<name>`` to call what was there first, then ``ours``."""
    previous = getattr(uwsgi, name, None)

    def hook() -> None:
        if previous is not None:
            previous()
        ours()

    setattr(uwsgi, name, hook)


def install(
    *,
    mode: str = "files",
    log_file: str | os.PathLike[str] | None = "logs/app.log",
    hub_address: str | None = None,
    level: str | int = "INFO",
    format: str = PID_TID_FORMAT,
    **file_options: Unpack[FileOptions],
) -> UwsgiLogging:
    """Make every uWSGI worker log into one rotating set; call it at the top of the WSGI module (or Django settings).

    The file options (``when``, ``interval``, ``utc``, ``backup_count``, ``max_bytes``, ``compress``,
    ``max_age``, ``encoding``,
    ``file_mode``) are those of every flocklog entry point; ``when=None, max_bytes=...`` rotates by
    size only. In hub mode they belong to the hub's ``logging.json`` (see :func:`hub_config`) and ``log_file`` is
    not used. Raises :class:`ConfigError` on a bad option, so the application does not load.
    """
    global _STATE
    checked = check_mode(mode)
    settings = log_settings(log_file if checked == "files" else None, level=level, format=format, **file_options)
    if checked == "files" and settings.files is None:
        raise ConfigError("uWSGI files mode needs log_file='logs/app.log'")
    address = None
    if checked == "hub":
        address = hub_address or os.environ.get(HUB_ADDRESS_ENV)
        if not address:
            raise ConfigError(
                f"uWSGI hub mode needs hub_address='unix:/run/app/hub.sock' or {HUB_ADDRESS_ENV} "
                "(uwsgi --env FLOCKLOG_HUB_ADDRESS=...), and a 'flocklog serve' listening there"
            )
        try:
            address = check_hub_reachable(address)
        except FlocklogError as exc:
            # Not fatal: the hub may start a moment after uWSGI; the client spools and replays once it answers.
            say_loudly(f"{exc}; records are spooled until it answers")
    uwsgi = _uwsgi()
    state = UwsgiLogging(mode=checked, settings=settings, hub_address=address)
    if uwsgi is None:
        state.install_here()  # not under uWSGI (runserver, a test): this process is the only one
        _STATE = state
        return state
    threads = _option(uwsgi, "enable-threads") or _option(uwsgi, "threads")
    if checked == "hub" and not threads:
        state.drain_after_request = True
        say_loudly(
            "uWSGI runs without --enable-threads, so the hub client's sender cannot run between requests: "
            "each request now waits for its records to reach the hub; add --enable-threads (or enable-threads = "
            "true) to log without that wait"
        )
    if uwsgi.worker_id() == 0:
        state.hold_until_fork()
    else:
        state.install_here()
    _STATE = state
    if uwsgi.worker_id() == 0 and "post_fork_hook" not in _HOOKED:
        # The master, before the fork: every worker replaces the handler it inherits with one of its own.
        _register_postfork(uwsgi, _after_fork_hook)
        _HOOKED.add("post_fork_hook")
    for name, hook in (("after_req_hook", _after_request_hook), ("atexit", _at_exit_hook)):
        if name not in _HOOKED:
            _chain(uwsgi, name, hook)
            _HOOKED.add(name)
    return state


def postfork(function: Any) -> Any:
    """``uwsgidecorators.postfork`` that cannot be too late: run now when already in a worker, and say so.

    Registered in a worker (``--lazy-apps``: the module is imported after the fork) a post-fork function never
    runs; uWSGI gives no sign of it. This one runs it at once there, with a warning naming the function.
    """
    uwsgi = _uwsgi()
    if uwsgi is None:
        return function
    if uwsgi.worker_id() != 0:
        say_loudly(
            f"@postfork {getattr(function, '__qualname__', function)!r} was registered in worker "
            f"{uwsgi.worker_id()} (pid {os.getpid()}), after the fork (--lazy-apps?): running it now, as a "
            "post-fork hook registered there would never run"
        )
        function()
        return function
    _register_postfork(uwsgi, function)
    return function


def hub_config(
    log_file: str | os.PathLike[str], *, format: str = PID_TID_FORMAT, **file_options: Any
) -> dict[str, Any]:
    """The dictConfig for ``flocklog serve --config`` (write it as JSON): the hub's file handler, same options."""
    settings = log_settings(log_file, format=format, **file_options)
    assert settings.files is not None
    return {
        "version": 1,
        "handlers": {"file": settings.files.handler_config()},
        "root": {"handlers": ["file"], "level": "DEBUG"},
    }
