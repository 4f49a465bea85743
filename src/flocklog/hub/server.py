"""The hub: listens, owns its threads and counters, and answers ``status``; the work is done by its parts.

One selector thread (:mod:`flocklog.hub._loop`) serves every connection and queues batch frames; the writer thread
(:mod:`flocklog.hub._writer`) owns the handlers, writes each batch once against the exactly-once journal
(:mod:`flocklog.hub._dedup`) and acks it (a small batch that finds the writer idle is written by the loop thread
itself, under the same lock), so a client knows what arrived and resends the rest. This module puts them
together: the listening sockets, the lifecycle (stop, fork, exit) and the status counters. A hub belongs to the
pid that started it: a forked child can never stop the parent's hub.

| field                                  | owner thread          | lock              |
|----------------------------------------|-----------------------|-------------------|
| ``_counters``                          | loop and writer       | ``_counter_lock`` |
| ``_dedup``, ``_batches`` (the writer)  | the writer thread, or | ``commit_lock``   |
|                                        | the loop (small batch)| (see _writer)     |
| ``_queue``                             | loop -> writer        | ``queue.Queue``   |
| ``_stopping``, ``_stopped``            | the owner's stop()    | an Event / once   |
"""

from __future__ import annotations

import contextlib
import copy
import logging
import logging.config
import os
import queue
import shutil
import socket
import stat
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from flocklog import _lifecycle
from flocklog.errors import ConfigError, HubError
from flocklog.hub import _crashpoints, frames
from flocklog.hub._address import Address, parse_address, resolve_secret
from flocklog.hub._dedup import Watermarks
from flocklog.hub._loop import Accounting, Conn, Loop
from flocklog.hub._spool import unsafe_reason, user_tag
from flocklog.hub._writer import MAX_TRACKED_CLIENTS, REOPEN, STOP, BatchWriter, writer_reserve

log = logging.getLogger("flocklog.hub")

DEFAULT_MAX_MEMORY = 64 * 1024 * 1024
DEFAULT_MAX_CONNECTIONS = 1024
_COUNTERS = (
    "connections_total",
    "batches",
    "records_received",
    "records_written",
    "duplicate_batches",
    "malformed",
    "oversized",
    "auth_failed",
    "handler_errors",
    "status_requests",
    "records_repaired",
    "records_skipped",
    "connections_refused",
    "handshake_timeouts",
    "idle_closed",
    "slow_peers_closed",
    "accept_errors",
    "read_pauses",
    "loop_errors",
    "writer_errors",
    "batches_rolled_back",
    "rollbacks_failed",
)


def _default_formatter(handlers: Sequence[logging.Handler]) -> None:
    for handler in handlers:
        if handler.formatter is None:
            handler.setFormatter(logging.Formatter("%(message)s"))


def handlers_from_config(config: dict[str, Any]) -> list[logging.Handler]:
    """Build the root handlers of a logging dictConfig dict, then detach them from the root logger.

    dictConfig can only configure the global logging tree, so the config is applied (with
    ``disable_existing_loggers`` off) and the root logger's previous handlers and level are restored afterwards.
    """
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    cfg = copy.deepcopy(config)
    cfg.setdefault("version", 1)
    cfg["disable_existing_loggers"] = False
    try:
        logging.config.dictConfig(cfg)
    except (ValueError, TypeError, AttributeError, ImportError) as exc:
        raise ConfigError(f"the hub's logging config is invalid: {exc}") from exc
    handlers = [h for h in root.handlers if h not in saved_handlers]
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)
    if not handlers:
        raise ConfigError("the hub's logging config gives the root logger no handlers: add root.handlers = [...]")
    return handlers


def minimum_max_memory(max_frame: int) -> int:
    """The smallest ``max_memory`` under which a paused hub can ever read again.

    Reading resumes below 3/4 of the bound, and what the loop counts never falls below the writer's reserve plus a
    sixteenth of the bound (allocator slack): with room for two frames on top, that is
    ``(reserve + 2 * max_frame) * 16 / 11``. A smaller bound (accepted before) kept the hub paused from the start.
    """
    return (writer_reserve(max_frame) + 2 * max_frame) * 16 // 11 + 64  # + 64: past the rounding of both sides


class Hub:
    """A running hub; create it with :func:`start_hub` (or ``flocklog serve``).

    ``max_memory`` bounds the bytes held for the writer (frames received and not yet written, the batch being
    written as decoded Python objects, input buffers as allocated, unsent replies): the hub stops reading from its
    connections while what it holds plus room for decoding one more frame (:func:`writer_reserve`, ~4 MiB for
    1 MiB frames) passes it, until the writer catches up. ``status`` shows the total and its parts.
    ``max_connections`` caps open connections (the rest are refused and counted); a connection that sends no
    valid frame within ``handshake_timeout`` or nothing for ``idle_timeout`` is closed. ``state_path`` keeps the
    de-duplication watermark on disk, so a batch written just before a crash is not written again after the
    restart (see :mod:`flocklog.hub._dedup`).
    """

    def __init__(
        self,
        handlers: Sequence[logging.Handler],
        *,
        addresses: Sequence[str] | None = None,
        secret: str | bytes | None = None,
        max_frame: int = frames.DEFAULT_MAX_FRAME,
        queue_size: int = 1024,
        max_memory: int = DEFAULT_MAX_MEMORY,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout: float = 300.0,
        handshake_timeout: float = 10.0,
        state_path: str | os.PathLike[str] | None = None,
    ) -> None:
        reserve = writer_reserve(max_frame)
        minimum = minimum_max_memory(max_frame)
        if max_memory < minimum:
            raise ConfigError(
                f"max_memory ({max_memory}) must be at least {minimum} for max_frame {max_frame}: what the writer "
                "needs to decode one frame, two frames and the allocator's share must fit under the level at which "
                "a paused hub reads again"
            )
        if max_connections < 1:
            raise ConfigError("max_connections must be >= 1")
        self.handlers = list(handlers)
        _default_formatter(self.handlers)
        self.secret = resolve_secret(secret)
        self.max_frame = max_frame
        self.max_memory = max_memory
        self.pid = os.getpid()
        self._private_dir: str | None = None
        parsed = [parse_address(a) for a in addresses or []]
        if not parsed:
            self._private_dir = tempfile.mkdtemp(prefix="flocklog-hub-")
            parsed = [Address("unix", path=os.path.join(self._private_dir, "hub.sock"))]
        for addr in parsed:
            if not addr.is_loopback and self.secret is None:
                raise ConfigError(
                    f"refusing to listen on non-loopback {addr} without a shared secret: "
                    "pass secret=... / --secret or set FLOCKLOG_HUB_SECRET (or bind 127.0.0.1)"
                )
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._counter_lock = threading.Lock()
        self._crash = _crashpoints.from_env()
        self._dedup = Watermarks(
            os.fspath(state_path) if state_path is not None else None, MAX_TRACKED_CLIENTS, crash=self._crash
        )
        self._stopping = threading.Event()
        self._stopped = False
        self._started = time.time()
        self._listeners: list[tuple[Address, socket.socket]] = []
        try:
            for addr in parsed:
                self._listeners.append(self._listen(addr))
        except BaseException:
            self._close_listeners()
            self._dedup.close()
            raise
        self.addresses = [str(addr) for addr, _ in self._listeners]
        self.address = self.addresses[0]
        self._loop = Loop(
            [sock for _, sock in self._listeners],
            secret=self.secret,
            max_frame=max_frame,
            max_memory=max_memory,
            writer_reserve=reserve,
            max_connections=max_connections,
            idle_timeout=idle_timeout,
            handshake_timeout=handshake_timeout,
            count=self._count,
            status=self.status,
            submit=self._submit,
            accounting=Accounting(),
        )
        self._batches = BatchWriter(
            self.handlers,
            self._queue,
            self._loop,
            dedup=self._dedup,
            crash=self._crash,
            count=self._count,
            add_counts=self._add_counts,
        )
        self._writer = threading.Thread(target=self._batches.run, name="flocklog-hub-writer", daemon=True)
        self._writer.start()
        self._io = threading.Thread(target=self._loop.run, name="flocklog-hub-io", daemon=True)
        self._io.start()
        _lifecycle.register(
            self,
            stage=_lifecycle.Stage.HUBS,
            after_fork=Hub._forget_after_fork,
            at_exit=Hub._stop_at_exit,
            sigterm=False,
        )

    # -- listening -------------------------------------------------------------------------------------------
    def _listen(self, addr: Address) -> tuple[Address, socket.socket]:
        """Bind and listen; a TCP port 0 comes back as the real port."""
        if addr.kind == "unix":
            unix_family = getattr(socket, "AF_UNIX", None)
            if unix_family is None:
                raise HubError(f"cannot listen on {addr}: no Unix sockets on this platform; use tcp://127.0.0.1:PORT")
            self._clear_stale_socket(addr)
            sock = socket.socket(unix_family, socket.SOCK_STREAM)
            try:
                sock.bind(addr.path)
                os.chmod(addr.path, 0o600)
            except OSError as exc:
                sock.close()
                raise HubError(f"cannot listen on {addr}: {exc}") from exc
        else:
            family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            if os.name != "nt":  # on Windows SO_REUSEADDR lets another process steal a bound port
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((addr.host, addr.port))
            except OSError as exc:
                sock.close()
                raise HubError(f"cannot listen on {addr}: {exc}") from exc
            if addr.port == 0:
                addr = Address("tcp", host=addr.host, port=sock.getsockname()[1])
        sock.listen(512)
        return addr, sock

    def _clear_stale_socket(self, addr: Address) -> None:
        try:
            mode = os.stat(addr.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise HubError(f"{addr.path} exists and is not a socket: choose another hub path")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(addr.path)
        except OSError:
            os.unlink(addr.path)  # a dead hub's leftover
            return
        finally:
            probe.close()
        raise HubError(f"another hub is already listening on {addr}: stop it or choose another path")

    def _close_listeners(self) -> None:
        for addr, sock in self._listeners:
            with contextlib.suppress(OSError):
                sock.close()
            if addr.kind == "unix" and os.getpid() == self.pid:
                with contextlib.suppress(OSError):
                    os.unlink(addr.path)

    def _count(self, name: str, n: int = 1) -> None:
        with self._counter_lock:
            self._counters[name] += n

    def _add_counts(self, counts: dict[str, int]) -> None:
        with self._counter_lock:
            for name, n in counts.items():
                self._counters[name] += n

    def _submit(self, conn: Conn, frame: Any, cost: int) -> None:
        """From the loop thread: a batch frame (its bytes already in the memory account), written at once when the
        writer is idle and the batch small (see :meth:`BatchWriter.commit_now`), else queued for the writer."""
        self._batches.submit(conn, frame, cost)

    # -- public ----------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Counters for ``flocklog status``: plain JSON-safe data."""
        with self._counter_lock:
            data: dict[str, Any] = dict(self._counters)
        stats = list(self._batches.client_stats.values())
        data.update(
            clients=self._loop.clients(),
            pid=self.pid,
            address=self.address,
            addresses=list(self.addresses),
            uptime_s=round(time.time() - self._started, 3),
            queue_depth=self._queue.qsize(),
            memory_in_use=self._loop.memory(),
            memory_limit=self.max_memory,
            **self._loop.memory_parts(),
            max_connections=self._loop.max_connections,
            clients_spooled=sum(s[0] for s in stats),
            clients_dropped=sum(s[1] for s in stats),
            authenticated=self.secret is not None,
            durable_dedup=self._dedup.path is not None,
            running=not self._stopping.is_set(),
        )
        from flocklog.hub.sinks._base import sink_stats  # here: the sinks' spool uses fcntl, absent on Windows

        sinks = sink_stats(self.handlers)
        if sinks:  # each sink's sent/queued/spooled/dropped: a sink that is down shows here, not in the files
            data["sinks"] = sinks
        return data

    def reopen(self) -> None:
        """Ask the writer thread to reopen every handler's file (SIGHUP after logrotate)."""
        if os.getpid() == self.pid and not self._stopping.is_set():
            self._queue.put(REOPEN)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting and reading, write and ack everything already received, flush the handlers.

        The handlers stay open. From any pid but the owner's this only warns: a forked child must never stop its
        parent's hub.
        """
        if os.getpid() != self.pid:
            warnings.warn(
                f"Hub.stop() called in pid {os.getpid()}, but the hub belongs to pid {self.pid}: ignored",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        if self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self._loop.stop_reading()
        try:
            self._queue.put(STOP, timeout=max(0.01, deadline - time.monotonic()))
        except queue.Full:
            log.warning("flocklog hub: stop timed out with %d batches unwritten", self._queue.qsize())
        self._writer.join(max(0.0, deadline - time.monotonic()))
        self._loop.finish()  # after the writer: its last acks are sent before the connections close
        self._io.join(max(0.5, deadline - time.monotonic()))
        self._close_listeners()
        for handler in self.handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        self._dedup.close()
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)

    def _stop_at_exit(self) -> None:
        """A hub nobody stopped still writes what it already received before the interpreter exits."""
        if self.pid == os.getpid():
            self.stop(timeout=2.0)

    def _forget_after_fork(self) -> None:
        """In a forked child: drop the inherited descriptors; the parent's hub keeps running untouched."""
        self._loop.forget_after_fork()
        self._counter_lock = threading.Lock()

    def __enter__(self) -> Hub:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Hub {self.address} pid={self.pid}>"


def return_frames_to_the_system() -> bool:
    """Fix glibc's mmap threshold at 256 KiB in a process that is only a hub (``flocklog serve``); True if set.

    glibc raises the threshold to the size of each large block freed (up to 32 MiB), so after the first frames the
    hub's 1 MiB frames come from the heap, and a heap that held 60 MiB of queued frames stays that large and
    fragmented: a flood held RSS ~7 MiB above what the hub accounts for (70.6 MiB over its baseline against a
    64 MiB bound, measured). With a fixed threshold each frame is its own mapping, given back when written (64.0
    MiB). Not for an in-process hub: the threshold is the whole application's. Elsewhere (musl, macOS) a no-op.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    m_mmap_threshold = -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, 256 * 1024))


def default_state_path(addresses: Sequence[str]) -> str:
    """Where ``flocklog serve`` keeps its de-duplication watermark: beside its Unix socket, else a private dir."""
    parsed = [parse_address(a) for a in addresses]
    for addr in parsed:
        if addr.kind == "unix":
            return f"{addr.path}.dedup"
    directory = os.path.join(tempfile.gettempdir(), f"flocklog-hub-{user_tag()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o700)
    reason = unsafe_reason(Path(directory))
    if reason is not None:
        raise ConfigError(f"refusing {directory} for the hub's state: {reason}; pass --state PATH")
    tcp = parsed[0]
    return os.path.join(directory, f"{tcp.host.replace(':', '_')}-{tcp.port}.dedup")


def start_hub(
    handlers: Sequence[logging.Handler] | None = None,
    *,
    address: str | None = None,
    secret: str | None = None,
    config: dict[str, Any] | None = None,
    max_frame: int = frames.DEFAULT_MAX_FRAME,
    max_memory: int = DEFAULT_MAX_MEMORY,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    idle_timeout: float = 300.0,
    handshake_timeout: float = 10.0,
    state_path: str | os.PathLike[str] | None = None,
) -> Hub:
    """Start a hub in this process (background threads) writing through ``handlers`` (or ``config``'s root ones).

    ``address`` None listens on a Unix socket in a fresh private directory; read it back from ``hub.address``
    and hand it to clients (``FLOCKLOG_HUB_ADDRESS``). The other options are :class:`Hub`'s.
    """
    if handlers is None and config is None:
        raise ConfigError("start_hub needs handlers=[...] or config={...} (a logging dictConfig dict)")
    chosen = list(handlers or []) + (handlers_from_config(config) if config is not None else [])
    return Hub(
        chosen,
        addresses=[address] if address else None,
        secret=secret,
        max_frame=max_frame,
        max_memory=max_memory,
        max_connections=max_connections,
        idle_timeout=idle_timeout,
        handshake_timeout=handshake_timeout,
        state_path=state_path,
    )
