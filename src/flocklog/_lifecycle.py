"""Fork, exit and SIGTERM for every buffered component: one registry, so each hook runs once and in order.

Why one module: four fork registries and three exit mechanisms had grown up (one per feature), and each covered a
different subset of the ways a process ends. A component (``HubHandler``, ``ExecutionLogger``, a file handler's
maintenance thread, an in-process hub) registers itself once with :func:`register`, naming what it must do

- ``after_fork``: in a forked child (``os.fork``, ``multiprocessing`` fork children, servers' prefork workers),
  before any other code of the child runs. The child must start with fresh connections, buffers and threads.
- ``flush``: on SIGTERM when another SIGTERM handler is already installed (gunicorn, Celery, the application):
  deliver what is buffered, then the previous handler runs and decides what happens next.
- ``at_exit``: once per process when it ends: a normal interpreter exit, ``sys.exit``, a ``multiprocessing``
  child (fork or spawn, which leaves through ``os._exit`` after ``threading._shutdown()`` and without ``atexit``),
  and a SIGTERM whose disposition was the default (it becomes ``SystemExit(143)``, which unwinds normally).

Exit hooks run from ``threading``'s own exit list, before non-daemon threads are joined and before ``logging``'s
``atexit`` call to ``logging.shutdown()``: producers (stage ``PRODUCERS``) drain while the hub clients and files
they may log into are still open, hub clients drain into hubs that are still running, and ``logging.shutdown()``
then closes handlers that are already drained (closing twice is a no-op for every flocklog handler). ``atexit`` is
kept as a second trigger for interpreters without the threading hook; a per-pid flag makes the hooks run once.

Not covered, because no code runs there: ``os._exit`` called by the application itself, SIGKILL, and a SIGTERM that
the application set to ``SIG_IGN`` (it is left ignored).

Shared state (module-level):

| field            | owner                     | lock    |
|------------------|---------------------------|---------|
| ``_entries``     | any thread (register)     | ``_lock`` (re-made in a forked child) |
| ``_exit_pid``    | the exiting thread        | ``_lock`` |
| ``_sigterm_pid`` | the main thread           | none: set only from the main thread |
"""

from __future__ import annotations

import atexit
import contextlib
import encodings.idna  # see _FORK_SAFE_IMPORTS below
import enum
import itertools
import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

__all__ = ["Stage", "register", "run_exit_hooks", "run_flush_hooks", "unregister"]

T = TypeVar("T")
Hook = Callable[[Any], None]

# Imported here, in the process that will fork, and not lazily by a child's first connection: socket.getaddrinfo
# of a host name imports encodings.idna on first use. A parent forked while another of its threads was inside that
# import (its first connection, an exporter's say) leaves the child a module lock no thread will release: seen here
# as producers whose every send failed with "LookupError: unknown encoding: idna" (CPython caches the failed codec
# lookup for the process), and as a child's first lookup that never returned. Every component that connects
# (HubHandler, ExecutionLogger) registers here first.
_FORK_SAFE_IMPORTS = (encodings.idna,)

#: The longest a SIGTERM that chains to another handler waits for the flush before handing over.
SIGTERM_FLUSH_TIMEOUT = 30.0


class Stage(enum.IntEnum):
    """Order at exit: whoever writes into another component drains before that component closes."""

    PRODUCERS = 10  # ExecutionLogger: its warnings go through logging, so handlers must still be open
    HUB_CLIENTS = 20  # HubHandler: drains into a hub that may live in this very process
    FILES = 30  # file handlers' background compression and retention
    HUBS = 40  # in-process hubs: last, after every client of this process has drained into them


@dataclass(frozen=True)
class _Entry:
    stage: Stage
    order: int
    after_fork: Hook | None
    flush: Hook | None
    at_exit: Hook | None


_lock = threading.Lock()
_entries: weakref.WeakKeyDictionary[Any, _Entry] = weakref.WeakKeyDictionary()
_counter = itertools.count()
_exit_pid: int | None = None
_sigterm_pid: int | None = None
_previous_sigterm: Any = None


def register(
    owner: T,
    *,
    stage: Stage,
    after_fork: Callable[[T], None] | None = None,
    flush: Callable[[T], None] | None = None,
    at_exit: Callable[[T], None] | None = None,
    sigterm: bool = True,
) -> None:
    """Register ``owner`` (held weakly) with hooks that take it as their only argument.

    Registering again replaces the hooks but keeps the owner's place in the order. ``sigterm=True`` makes SIGTERM
    drain (see the module docstring) when called from the main thread; elsewhere SIGTERM is left alone.
    """
    with _lock:
        old = _entries.get(owner)
        order = old.order if old is not None else next(_counter)
        _entries[owner] = _Entry(stage, order, after_fork, flush, at_exit)
    if sigterm:
        _install_sigterm()


def unregister(owner: object) -> None:
    """Forget ``owner`` (a closed component has nothing left to drain)."""
    with _lock:
        _entries.pop(owner, None)


def _snapshot() -> list[tuple[Any, _Entry]]:
    with _lock:
        items = list(_entries.items())
    return sorted(items, key=lambda item: (item[1].stage, item[1].order))


def _call(hook: Hook | None, owner: object) -> None:
    """A hook that fails must not stop the others, nor reach the application that is exiting or forking."""
    if hook is None:
        return
    try:
        hook(owner)
    except Exception as exc:
        with contextlib.suppress(Exception):
            sys.stderr.write(f"flocklog: {getattr(hook, '__qualname__', hook)} failed: {exc!r}\n")


def run_exit_hooks() -> None:
    """Drain and close every registered component, once per process; safe to call more than once."""
    global _exit_pid
    with _lock:
        if _exit_pid == os.getpid():
            return
        _exit_pid = os.getpid()
    for owner, entry in _snapshot():
        _call(entry.at_exit, owner)


def run_flush_hooks() -> None:
    """Deliver what every component holds, without closing anything (the process goes on)."""
    for owner, entry in _snapshot():
        _call(entry.flush, owner)


def _after_fork_in_child() -> None:
    global _lock, _exit_pid
    _lock = threading.Lock()  # another thread of the parent may have held it at the fork
    _exit_pid = None
    for owner, entry in _snapshot():
        _call(entry.after_fork, owner)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    previous = _previous_sigterm
    if callable(previous):
        # Flush on a helper thread and wait a bounded time: this handler runs between two bytecodes of the main
        # thread, which may hold a lock the flush needs (a caller inside log() or emit()).
        worker = threading.Thread(target=run_flush_hooks, name="flocklog-sigterm-flush", daemon=True)
        worker.start()
        worker.join(SIGTERM_FLUSH_TIMEOUT)
        previous(signum, frame)
        return
    # The default disposition would end the process at once, with every buffer lost. SystemExit unwinds the main
    # thread normally instead, so the exit hooks drain everything; the status is the shell's 128 + signal number.
    raise SystemExit(128 + signum)


def _install_sigterm() -> None:
    """Put our handler in front of the one in place; never replace SIG_IGN, never install twice in one process."""
    global _sigterm_pid, _previous_sigterm
    if _sigterm_pid == os.getpid() or threading.current_thread() is not threading.main_thread():
        return
    try:
        current = signal.getsignal(signal.SIGTERM)
        if current is _on_sigterm or current is signal.SIG_IGN or current is None:
            _sigterm_pid = os.getpid()
            return
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError, AttributeError):  # no SIGTERM here (some embedded interpreters)
        return
    _previous_sigterm = current if current is not signal.SIG_DFL else None
    _sigterm_pid = os.getpid()


if hasattr(os, "register_at_fork"):  # not on Windows, where there is no fork to survive
    os.register_at_fork(after_in_child=_after_fork_in_child)
_register_threading_atexit = getattr(threading, "_register_atexit", None)
if _register_threading_atexit is not None:
    with contextlib.suppress(RuntimeError):  # imported while the interpreter is already shutting down
        _register_threading_atexit(run_exit_hooks)
atexit.register(run_exit_hooks)
