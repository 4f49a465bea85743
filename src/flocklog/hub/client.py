"""HubHandler: a logging handler that ships formatted records to a hub, spooling to disk while the hub is away.

``emit()`` only formats, encodes and appends to a bounded buffer; a background sender thread batches, sends, waits
for the hub's ack and, when the hub cannot be reached, appends the batch to a local spool file that is replayed in
order (before anything newer) once the hub is back. Batches carry ``(client id, seq)`` so a resent batch that the
hub already wrote is skipped there. After ``fork`` the child starts empty with a new client id and its own thread.
The parts live beside it: the buffer (:mod:`._buffer`), the connector thread (:mod:`._connector`), the spool
(:mod:`._spool`) and one connection (:mod:`._session`); the sender thread
(:mod:`._sender`, the handler's base class); this module is the handler: emit(), close(), drain(), stats().

| field                                        | owner thread                              | lock                 |
|----------------------------------------------|-------------------------------------------|----------------------|
| ``_buffer`` (``_mutex`` is its mutex)        | emit() and the sender (see ``_buffer``)   | ``_mutex``           |
| ``_closing``, ``_closed``, ``_close_quota``  | close() sets, sender and emit() read      | ``_mutex`` (set)     |
| ``_deadline``                                | close() sets, the sender reads            | ``_mutex`` (set)     |
| ``_session``, ``_seq``, ``_batch_limit``, ``_last_batch`` | the sender                   | none                 |
| ``_thread``                                  | the first emit() or the constructor       | ``_mutex``           |
| ``_stats``                                   | emit() (under ``_mutex``) and the sender  | ``_mutex`` for emit's|
| ``_connector``, ``_spool``                   | the sender (their own locks inside)       | theirs               |
| ``_wake``, ``_idle``                         | any (an Event, a Condition)               | their own            |
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from flocklog import _lifecycle
from flocklog.errors import ConfigError
from flocklog.hub import frames
from flocklog.hub._address import resolve_address, resolve_secret
from flocklog.hub._buffer import RecordBuffer
from flocklog.hub._connector import Connector
from flocklog.hub._sender import _ENVELOPE_ROOM, HubSender
from flocklog.hub._session import ClientSession
from flocklog.hub._spool import ENV_SPOOL_DIR, Spool, default_spool_dir

__all__ = ["ENV_SPOOL_DIR", "HubHandler", "default_spool_dir"]

_POLICIES = ("drop_oldest", "drop_newest", "block")


class HubHandler(HubSender, logging.Handler):
    """Send records to a flocklog hub; never block the caller beyond microseconds (unless ``when_full='block'``).

    The text the hub writes is this handler's formatted message (``self.format(record)``), so configure the
    formatter here. Whatever cannot be delivered within ``drain_timeout`` at exit goes to the spool, and spool files
    left by dead processes in ``spool_dir`` are adopted and replayed by the next HubHandler that starts there.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        secret: str | bytes | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        capacity: int = 10000,
        when_full: str = "drop_oldest",
        drain_timeout: float = 5.0,
        batch_size: int = 512,
        max_frame: int = frames.DEFAULT_MAX_FRAME,
        connect_timeout: float = 2.0,
        retry_interval: float = 0.5,
        linger: float = 0.005,
        handle_sigterm: bool = True,
        adopt_orphans: bool = True,
        level: int | str = logging.NOTSET,
    ) -> None:
        # Checked before Handler.__init__, which puts the handler in logging's shutdown list: a handler that
        # failed to construct must not be flushed (half-built) by logging.shutdown() at exit.
        if when_full not in _POLICIES:
            raise ConfigError(f"when_full={when_full!r}: use one of {', '.join(_POLICIES)}")
        if capacity < 1 or batch_size < 1:
            raise ConfigError("capacity and batch_size must be >= 1")
        if not 0 <= linger < retry_interval:
            raise ConfigError(f"linger must be >= 0 and below retry_interval, got {linger}")
        if max_frame < 4 * _ENVELOPE_ROOM:
            raise ConfigError(f"max_frame must be at least {4 * _ENVELOPE_ROOM} bytes")
        resolved = resolve_address(address)
        super().__init__(level)
        self.address = resolved
        self.secret = resolve_secret(secret)
        self.spool_dir = Path(spool_dir) if spool_dir is not None else Path(default_spool_dir())
        self.capacity = capacity
        self.when_full = when_full
        self.drain_timeout = drain_timeout
        self.batch_size = batch_size
        self.max_frame = max_frame
        self.connect_timeout = connect_timeout
        self.retry_interval = retry_interval
        self.linger = linger
        self.adopt_orphans = adopt_orphans
        self._record_limit = max_frame - _ENVELOPE_ROOM
        self._handle_sigterm = handle_sigterm
        self._reset_state()
        self._register()
        if adopt_orphans and self._spool.orphans():
            # Spools of exited writers are replayed now, not at this handler's first record (which may never come).
            with self._mutex:
                if self._thread is None:
                    self._start_sender()

    # -- state that a forked child must not share ------------------------------------------------------------
    def _reset_state(self) -> None:
        self._pid = os.getpid()
        self._cid = uuid.uuid4().hex
        self._seq = 0
        self._buffer = RecordBuffer()
        self._mutex = self._buffer.mutex  # guards the buffer and the closing state below
        self._wake = threading.Event()
        self._idle = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._session: ClientSession | None = None
        self._last_batch = -1e9
        self._closing = False
        self._close_quota = 0  # records a close() in progress still waits for the sender to send
        self._closed = False
        self._deadline = float("inf")
        self._spool = Spool(self.spool_dir, self._pid, self._cid, self._warn_once)
        self._batch_limit = self._record_limit  # cut to the hub's advertised frame limit once connected
        # Connections are made (and greeted) on the connector's thread: a hub that accepts and never greets
        # cannot hold the sender, which spools meanwhile.
        self._connector = Connector(
            self.address,
            self.secret,
            connect_timeout=self.connect_timeout,
            retry_interval=self.retry_interval,
            warn=self._warn_once,
            spool_dir=self._spool_dir,
            wake=self._wake,
        )
        self._stats: dict[str, int] = dict.fromkeys(
            (
                "emitted",
                "sent",
                "spooled",
                "replayed",
                "dropped_full",
                "dropped_oversize",
                "truncated",
                "dropped_spool_error",
                "dropped_rejected",
                "batches",
                "reconnects",
                "adopted_spools",
                "split_batches",
                "sender_errors",
            ),
            0,
        )
        self._warned: set[str] = getattr(self, "_warned", set())

    def _after_fork_in_child(self) -> None:
        """The child owns nothing of the parent's: not its buffer (the parent sends it), socket, thread or spool."""
        if self._session is not None:
            with contextlib.suppress(OSError):
                self._session.sock.close()
        self._connector.forget()
        self._spool.forget()
        self._warned = set()
        self._reset_state()
        self._register()  # a handler the parent had closed is live again here, and must be drained at exit

    def _register(self) -> None:
        _lifecycle.register(
            self,
            stage=_lifecycle.Stage.HUB_CLIENTS,
            after_fork=HubHandler._after_fork_in_child,
            flush=HubHandler._drain_at_sigterm,
            at_exit=HubHandler.close,
            sigterm=self._handle_sigterm,
        )

    # -- the hot path ----------------------------------------------------------------------------------------
    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self._pid != os.getpid():  # forked without the at-fork hook (should not happen): start fresh
                self._after_fork_in_child()
            msg = self.format(record)
            data, truncated = frames.encode_log_record(record, msg, self._record_limit)
            self._enqueue(data, truncated)
        except Exception:
            self.handleError(record)

    def _enqueue(self, data: bytes, truncated: bool) -> None:
        buffer = self._buffer
        with self._mutex:
            if self._closed:
                self._warn_once("closed", "flocklog HubHandler: record emitted after close() was spooled")
                self._spool_batches([[data]])
                return
            st = self._stats
            st["emitted"] += 1
            if truncated:
                st["truncated"] += 1
            if buffer.held() >= self.capacity:
                if self.when_full == "drop_newest":
                    st["dropped_full"] += 1
                    return
                if self.when_full == "drop_oldest":
                    if buffer.buf:  # when the sender owns all of them they are on their way: keep this one
                        buffer.buf.popleft()
                        st["dropped_full"] += 1
                else:
                    while buffer.held() >= self.capacity and not self._closing:
                        self._wake.set()
                        buffer.space.wait(0.1)
            buffer.buf.append(data)
            if self._thread is None and not self._closing:  # during close(), its own tail spools what is left
                self._start_sender()
        if not self._wake.is_set():
            self._wake.set()

    # -- lifecycle -------------------------------------------------------------------------------------------
    def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything emitted so far was acked by the hub or spooled; True if that happened in time."""
        deadline = time.monotonic() + (self.drain_timeout if timeout is None else timeout)
        while True:
            with self._mutex:
                idle = self._buffer.empty() and not self._spool.pending
            if idle:
                return True
            if time.monotonic() >= deadline or self._thread is None or not self._thread.is_alive():
                return False
            self._wake.set()
            with self._idle:
                self._idle.wait(0.05)

    def flush(self) -> None:
        wake = getattr(self, "_wake", None)  # absent only if the constructor failed half-way
        if wake is not None:
            wake.set()

    def _drain_at_sigterm(self) -> None:
        self.drain()

    def stats(self) -> dict[str, Any]:
        """Counters: emitted, sent, spooled, replayed, dropped_full, dropped_oversize, truncated, ..."""
        with self._mutex:
            data: dict[str, Any] = dict(self._stats)
            data["buffered"] = self._buffer.held()
        data["connected"] = self._session is not None
        data["pending_spools"] = len(self._spool.pending)
        data["connect_failures"], data["auth_refused"] = self._connector.counts()
        data["client_id"] = self._cid
        data["pid"] = self._pid
        return data

    def close(self) -> None:
        """Drain within ``drain_timeout``; whatever is still unsent then goes to the spool file, never lost.

        Never raises into the application: an error here is counted and said once.
        """
        if self._pid != os.getpid() or self._closed:
            super().close()
            return
        try:
            self._close()
        except Exception as exc:
            self._sender_error(exc)
        _lifecycle.unregister(self)
        super().close()

    def _close(self) -> None:
        thread = self._thread
        with self._mutex:
            # The sender drains what is buffered now, not what other threads go on logging: under a steady stream
            # "until the buffer is empty" never came, and close() waited out its timeout (6 s, measured).
            self._close_quota = self._buffer.held()
            self._closing = True
            self._deadline = time.monotonic() + self.drain_timeout
            self._buffer.space.notify_all()
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.drain_timeout + self.connect_timeout + 1.0)
        # Under the mutex to the end: a record emitted meanwhile waits, then spools to a file this has finished
        # with, rather than writing to one this is closing.
        with self._mutex:
            self._closed = True
            stopped = thread is None or not thread.is_alive()
            if stopped:  # the sender is gone: its share is ours too, and older
                leftovers = self._buffer.take_all_locked()
                if leftovers:
                    self._deadline = 0.0
                    self._spool_batches(
                        [leftovers[i : i + self.batch_size] for i in range(0, len(leftovers), self.batch_size)]
                    )
                self._close_spool()
                self._close_session()
            else:  # the sender still owns its share; what is buffered is no longer anyone's
                leftovers = list(self._buffer.buf)
                self._buffer.buf.clear()
        if not stopped and leftovers:  # the sender is stuck in a send (bounded by its socket timeout): not its files
            self._warn_once("stuck", f"flocklog HubHandler: sender stuck at close; {len(leftovers)} records lost")
            self._stats["dropped_spool_error"] += len(leftovers)

    def __repr__(self) -> str:
        return f"<HubHandler {self.address} ({logging.getLevelName(self.level)})>"
