"""A log hub as a supervised child process of an integration's launcher (today the uvicorn wrapper).

Its own module because it is its own concept: starting ``flocklog serve`` in a session of its own, knowing when
it listens, restarting it loudly when it dies, draining it at the end, and making it follow its parent when the
parent is SIGKILLed. It owns no log settings beyond the handler config it is given.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from flocklog.contrib._setup import LogSettings, private_hub_address, say_loudly
from flocklog.errors import HubError

__all__ = ["HubChild"]

_CHILD_BOOT = (
    "import sys; from flocklog.contrib._hubchild import _hub_child_main; sys.exit(_hub_child_main(sys.argv[1:]))"
)
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_READY_TIMEOUT = 60.0
_RESTART_DELAYS = (0.0, 0.5, 1.0, 2.0, 5.0)  # after the 1st, 2nd ... crash in a row; a hub up for 30 s resets it
_HEALTHY_AFTER = 30.0


def _die_with_parent(parent: int) -> threading.Event:
    """In the hub child: a drained stop (serve's SIGTERM) when the wrapper dies, even by SIGKILL.

    Linux's ``PR_SET_PDEATHSIG`` does it in the kernel (SIGUSR1 here, turned into SIGTERM, so the child knows the
    stop came from its parent's death and not from the wrapper); elsewhere (or if prctl fails) the stdin pipe the
    wrapper holds is the signal: its end of file means the wrapper is gone. A wrapper that died before either was
    set up is seen by its pid no longer being our parent. The event returned is set when the wrapper died.
    """
    orphaned = threading.Event()

    def parent_died(*_: object) -> None:
        orphaned.set()
        os.kill(os.getpid(), signal.SIGTERM)

    if sys.platform.startswith("linux"):
        signal.signal(signal.SIGUSR1, parent_died)
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGUSR1, 0, 0, 0)

    def watch_stdin() -> None:
        # os.read, not sys.stdin: a daemon thread blocked inside the buffered reader aborts interpreter shutdown.
        with contextlib.suppress(OSError):
            while os.read(0, 4096):
                pass
        parent_died()

    threading.Thread(target=watch_stdin, name="flocklog-hub-parent-watch", daemon=True).start()
    if os.getppid() != parent:
        parent_died()
    return orphaned


def _hub_child_main(argv: list[str]) -> int:
    """The hub child's entry point: ``<wrapper pid> <private directory> <flocklog serve options>``.

    Runs ``flocklog serve`` here. When the wrapper died first (SIGKILL) nobody else removes the private directory
    of the socket and the journal, so the child does, once everything it received is written.
    """
    import click

    from flocklog.hub._cli import register

    parent, directory = int(argv[0]), Path(argv[1])
    orphaned = _die_with_parent(parent)
    group = click.Group("flocklog")
    register(group)
    try:
        group.main(args=["serve", *argv[2:]], prog_name="flocklog", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    finally:
        if orphaned.is_set() and directory.name.startswith("flocklog-hub-"):
            shutil.rmtree(directory, ignore_errors=True)
    return 0


class HubChild:
    """The wrapper's hub as its own process (``flocklog serve``), supervised from the wrapper.

    Why a process: in the uvicorn supervisor the hub shared a GIL and a CPU with uvicorn's own loop and cost twice
    the CPU per line it costs in a process of its own. The child runs in its own session (a terminal's Ctrl-C or a
    SIGTERM to the wrapper's process group must not stop it before the workers' last records arrive), stops with
    the wrapper (see :func:`_die_with_parent`), and is restarted, loudly, if it dies while serving: the clients
    spool meanwhile and replay into the new one, whose de-duplication journal (beside the socket) is the old one's.

    | field                         | owner thread                        | lock     |
    |-------------------------------|-------------------------------------|----------|
    | ``_proc``, ``restarts``       | start(): the caller; then the watcher | ``_lock`` |
    | ``_serving``                  | start(): the caller; then the watcher | an Event |
    | ``_stopping``                 | stop() sets, the watcher reads      | an Event |
    """

    def __init__(self, settings: LogSettings, *, drain_timeout: float = 10.0) -> None:
        assert settings.files is not None
        settings.files.check_directory()  # a missing directory is the wrapper's start-up error, not the child's
        self.address = private_hub_address()
        self._socket = self.address[len("unix:") :]
        self._directory = Path(self._socket).parent
        config = {
            "version": 1,
            "handlers": {"file": settings.files.handler_config()},
            "root": {"handlers": ["file"], "level": "DEBUG"},
        }
        config_path = self._directory / "hub.json"
        config_path.write_text(json.dumps(config), encoding="utf-8")
        self._args = [
            sys.executable,
            "-c",
            _CHILD_BOOT,
            str(os.getpid()),
            str(self._directory),
            "--config",
            str(config_path),
            "--unix",
            self._socket,
            "--drain-timeout",
            str(drain_timeout),
        ]
        self.drain_timeout = drain_timeout
        self.restarts = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._serving = threading.Event()  # the current child listened and has not exited since
        self._proc: subprocess.Popen[bytes] | None = None
        self._watcher: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    def start(self) -> None:
        """Start the child and return once its socket accepts connections; HubError if it never does."""
        with self._lock:
            self._spawn()
        if self._wait_ready():
            self._serving.set()
        self._watcher = threading.Thread(target=self._watch, name="flocklog-hub-supervisor", daemon=True)
        self._watcher.start()

    def _spawn(self) -> None:
        # The watcher thread lives until stop(): PR_SET_PDEATHSIG fires when the thread that forked exits.
        self._proc = subprocess.Popen(self._args, stdin=subprocess.PIPE, start_new_session=True)

    def _wait_ready(self) -> bool:
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline and not self._stopping.is_set():
            if proc.poll() is not None:
                raise HubError(f"the log hub exited with {proc.returncode} before it listened (its message is above)")
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(1.0)
                sock.connect(self._socket)
                return True
            time.sleep(0.02)
        if self._stopping.is_set():
            return False
        raise HubError(f"the log hub (pid {proc.pid}) did not listen on {self.address} within {_READY_TIMEOUT:.0f}s")

    def _watch(self) -> None:
        """Wait for the child; if it dies while serving, say so and start another (with a growing pause)."""
        crashes = 0
        while True:
            proc = self._proc
            assert proc is not None
            started = time.monotonic()
            code = proc.wait()
            self._serving.clear()
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()
            if self._stopping.is_set():
                return
            crashes = 1 if time.monotonic() - started > _HEALTHY_AFTER else crashes + 1
            delay = _RESTART_DELAYS[min(crashes, len(_RESTART_DELAYS)) - 1]
            say_loudly(
                f"the log hub (pid {proc.pid}) exited with {code} while serving: restarting it"
                + (f" in {delay:.1f}s" if delay else "")
                + "; the workers spool their records meanwhile and replay them into the new hub"
            )
            if self._stopping.wait(delay):
                return
            try:
                with self._lock:
                    if self._stopping.is_set():
                        return
                    self.restarts += 1
                    self._spawn()
                if self._wait_ready():
                    self._serving.set()
            except Exception as exc:  # never the end of the supervision: the next round tries again
                say_loudly(f"restarting the log hub failed: {exc}; trying again")

    def stop(self) -> int | None:
        """SIGTERM the child and wait for it to write everything it received; its exit code (None: it was killed).

        Call it after every worker has exited, so their last records are in. A child that does not finish within
        the drain timeout (and a margin) is killed, and that is said.
        """
        with self._lock:
            self._stopping.set()
            proc = self._proc
        code: int | None = None
        if proc is None or proc.poll() is not None or not self._serving.is_set():
            say_loudly(
                "the log hub was not serving when the wrapper stopped (it died, and no restart of it was listening "
                "yet): records the workers spooled meanwhile stay in their spool directory, for the next hub "
                "(`flocklog serve`, or this wrapper again) to adopt"
            )
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(self.drain_timeout + 10.0)
            except subprocess.TimeoutExpired:
                say_loudly(f"the log hub (pid {proc.pid}) did not stop within {self.drain_timeout + 10.0:.0f}s: killed")
                proc.kill()
                proc.wait()
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()
        if self._watcher is not None:
            self._watcher.join(5.0)
        shutil.rmtree(self._directory, ignore_errors=True)
        return code
