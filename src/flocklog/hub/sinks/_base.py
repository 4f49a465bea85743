"""The sink machinery every exporter shares: a bounded queue, one sender thread, a disk spool, and counters.

A sink is a ``logging.Handler`` the hub's writer thread calls like any other. ``emit`` only turns the record into
a JSON-safe item (:meth:`SinkHandler.prepare`) and puts it on the sink's own queue, so a slow or dead receiver
never holds up the hub, its files or the other sinks. The sender thread batches what is waiting, hands it to
:meth:`SinkHandler.deliver`, and spools a batch it could not deliver to disk, retrying the spool (oldest segment
first, and while it is not empty newer batches queue up behind it) with a capped back-off. A full queue spools
straight from ``emit`` rather than waiting; such a record may then arrive before older ones still queued, so
receivers order by each record's own timestamp. Delivery is at least once: a hub killed between a delivery and
the removal of its spool segment resends that segment. Only a spool that cannot be written (disk full,
permissions) or a corrupt spool line drops records, each counted in :meth:`SinkHandler.stats` and reported by a
rate-limited warning.

Shared state:

| field                        | owner thread                                  | lock            |
|------------------------------|-----------------------------------------------|-----------------|
| ``_queue``                   | emit (put) / sender (get); close drains it    | its own         |
| ``_counters``                | any                                           | ``_count_lock`` |
| ``_accepted``/``_settled``   | emit / sender, waited on by flush             | ``_settle``     |
| ``_in_flight``, ``_healthy_at``, ``_backoff``, ``last_error`` | sender (read by stats/close) | none: single writer |
| ``_spool`` (files, segment)  | emit (queue full) / sender / close            | ``_Spool.lock`` |
| ``_sender``, ``_pid``        | the thread that starts or forks               | ``_start_lock`` |
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

from flocklog import _lifecycle
from flocklog.errors import ConfigError
from flocklog.hub.sinks._spool import _Spool, default_spool_dir

log = logging.getLogger("flocklog.hub.sinks")

COUNTERS = ("sent", "spooled_total", "replayed", "dropped", "failures", "prepare_errors")
_WARN_EVERY = 60.0  # seconds between two warnings of the same kind


class SinkHandler(logging.Handler):
    """Base class of the hub's sinks: subclasses give :meth:`prepare` (record -> JSON-safe item) and :meth:`deliver`.

    ``deliver`` must raise on failure; the batch is then spooled and retried. ``stats()`` gives ``sent``,
    ``queued``, ``spooled`` (on disk now), ``in_flight``, ``dropped``, and ``accepted``, ``spooled_total``,
    ``replayed``, ``failures``, ``prepare_errors``.
    """

    kind = "sink"
    extra_counters: tuple[str, ...] = ()

    def __init__(
        self,
        level: int | str = logging.NOTSET,
        *,
        name: str | None = None,
        queue_size: int = 10_000,
        batch_size: int = 512,
        spool_dir: str | None = None,
        retry_interval: float = 0.5,
        max_retry_interval: float = 5.0,
        drain_timeout: float = 10.0,
    ) -> None:
        super().__init__(level)
        if queue_size < 1 or batch_size < 1:
            raise ConfigError(f"{type(self).__name__}: queue_size and batch_size must be >= 1")
        if not 0 < retry_interval <= 3600 or drain_timeout < 0:
            raise ConfigError(f"{type(self).__name__}: retry_interval must be in (0, 3600] s, drain_timeout >= 0")
        if name:
            self.set_name(name)
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.spool_dir = spool_dir or default_spool_dir(self.kind, name)
        self.retry_interval = retry_interval
        self.max_retry_interval = max(retry_interval, max_retry_interval)
        self.drain_timeout = drain_timeout
        self._init_state()
        if self._spool.has_data():  # a predecessor's leftovers: resend them even if nothing new arrives
            self._ensure_sender()
        _lifecycle.register(self, stage=_lifecycle.Stage.HUBS, after_fork=SinkHandler._reset_after_fork, sigterm=False)

    def _init_state(self) -> None:
        self._pid = os.getpid()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=self.queue_size)
        self._counters = dict.fromkeys(COUNTERS + self.extra_counters, 0)
        self._count_lock = threading.Lock()
        self._settle = threading.Condition()
        self._accepted = 0
        self._settled = 0
        self._in_flight = 0  # records of a queued batch being delivered (not on disk meanwhile)
        self._spool = _Spool(self.spool_dir, self.batch_size)
        self._start_lock = threading.Lock()
        self._sender: threading.Thread | None = None
        self._stopping = threading.Event()
        self._closed = False
        self._stop_deadline = 0.0
        self._healthy_at = 0.0  # monotonic time before which we do not try the receiver again
        self._backoff = self.retry_interval
        self._warned: dict[str, float] = {}
        self.last_error: str | None = None

    # -- what subclasses provide -----------------------------------------------------------------------------
    def prepare(self, record: logging.LogRecord) -> Any:
        """Turn a record into a JSON-safe item (called on the hub's writer thread: keep it cheap)."""
        raise NotImplementedError

    def deliver(self, items: list[Any]) -> None:
        """Send items to the receiver, raising on any failure (called on the sender thread only)."""
        raise NotImplementedError

    def close_transport(self) -> None:
        """Release connections (sender thread stopped, or never started)."""

    # -- the writer thread's side ----------------------------------------------------------------------------
    def emit(self, record: logging.LogRecord) -> None:
        try:
            item = self.prepare(record)
        except Exception:
            self._count("prepare_errors")
            self._count("dropped")
            self._warn("prepare", "flocklog sink %s: a record could not be encoded and was dropped", self._label())
            self.handleError(record)
            return
        self.put(item)

    def put(self, item: Any) -> None:
        """Queue one prepared item; a full queue (or a closed sink) spools it instead of waiting."""
        if os.getpid() != self._pid:
            self._reset_after_fork()
        with self._settle:
            self._accepted += 1
        if not self._closed:
            self._ensure_sender()
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                pass
        self._spool_items([item], reason="queue full" if not self._closed else "closed")
        self._settled_n(1)
        if self._closed:
            self._warn("closed", "flocklog sink %s: a record emitted after close() was spooled", self._label())

    def _ensure_sender(self) -> None:
        if self._sender is not None:
            return
        with self._start_lock:
            if self._sender is None:
                t = threading.Thread(target=self._run, name=f"flocklog-sink-{self._label()}", daemon=True)
                t.start()
                self._sender = t

    # -- the sender thread -----------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                if not self._step():
                    return
            except Exception as exc:  # a sender never dies: count, say so, go on
                self._count("failures")
                self._warn("internal", "flocklog sink %s: sender error: %r", self._label(), exc)
                time.sleep(min(self._backoff, 1.0))

    def _step(self) -> bool:
        """One round: replay a spool segment if the receiver may be up, then send (or spool) what is queued."""
        now = time.monotonic()
        spool_waiting = self._spool.has_data()
        if spool_waiting and now >= self._healthy_at:
            taken = self._spool.take()
            if taken is not None:
                path, items, corrupt = taken
                if corrupt:
                    self._count("dropped", corrupt)
                    self._warn(
                        "corrupt", "flocklog sink %s: %d corrupt spooled records dropped", self._label(), corrupt
                    )
                if not items or self._try_deliver(items):
                    self._spool.done(path, len(items) + corrupt)
                    self._count("replayed", len(items))
            spool_waiting = self._spool.has_data()
        # closing: keep replaying the spool while the receiver answers and the drain time lasts
        if (
            self._stopping.is_set()
            and self._queue.empty()
            and (not spool_waiting or now < self._healthy_at or now >= self._stop_deadline)
        ):
            return False
        wait = 0.0 if spool_waiting and now >= self._healthy_at else max(0.0, self._healthy_at - now)
        batch = self._collect(wait if spool_waiting else max(wait, 0.2))
        if not batch:
            return True
        if self._spool.has_data() or time.monotonic() < self._healthy_at:
            self._spool_items(batch, reason=self.last_error or "receiver down")  # keep order behind the spool
        else:
            self._in_flight = len(batch)
            try:
                if not self._try_deliver(batch):
                    self._spool_items(batch, reason=self.last_error or "delivery failed")
            finally:
                self._in_flight = 0
        self._settled_n(len(batch))
        return True

    def _collect(self, timeout: float) -> list[Any]:
        items: list[Any] = []
        try:
            items.append(self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait())
        except queue.Empty:
            return items
        while len(items) < self.batch_size:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _try_deliver(self, items: list[Any]) -> bool:
        try:
            self.deliver(items)
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._count("failures")
            self._healthy_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self.max_retry_interval)
            self._warn(
                "deliver",
                "flocklog sink %s: delivery failed, spooling to %s: %s",
                self._label(),
                self._spool.directory,
                self.last_error,
            )
            return False
        self._count("sent", len(items))
        if self.last_error is not None:
            log.info("flocklog sink %s: receiver back", self._label())
        self.last_error = None
        self._backoff = self.retry_interval
        self._healthy_at = 0.0
        return True

    def _spool_items(self, items: list[Any], *, reason: str) -> None:
        try:
            self._spool.append(items)
        except Exception as exc:
            self._count("dropped", len(items))
            self._warn(
                "spool", "flocklog sink %s: cannot spool %d records (%s): %s", self._label(), len(items), reason, exc
            )
        else:
            self._count("spooled_total", len(items))

    def _settled_n(self, n: int) -> None:
        with self._settle:
            self._settled += n
            self._settle.notify_all()

    # -- counters and warnings -------------------------------------------------------------------------------
    def _count(self, name: str, n: int = 1) -> None:
        with self._count_lock:
            self._counters[name] += n

    def _warn(self, key: str, msg: str, *args: object) -> None:
        """At most one warning of each kind a minute: a dead receiver must not flood the hub's own log."""
        now = time.monotonic()
        if now - self._warned.get(key, -_WARN_EVERY) >= _WARN_EVERY:
            self._warned[key] = now
            with contextlib.suppress(Exception):
                log.warning(msg, *args)

    def _label(self) -> str:
        return self.get_name() or self.kind

    def stats(self) -> dict[str, int]:
        """Counters for ``flocklog status``: sent, queued, spooled (on disk now), dropped, and more."""
        with self._count_lock:
            data = dict(self._counters)
        data["queued"] = self._queue.qsize()
        data["spooled"] = self._spool.records
        data["in_flight"] = self._in_flight
        data["accepted"] = self._accepted
        return data

    # -- flush / close ---------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Wait (at most ``drain_timeout``) until everything emitted so far was delivered or spooled to disk."""
        if os.getpid() != self._pid or self._sender is None:
            return
        deadline = time.monotonic() + self.drain_timeout
        with self._settle:
            target = self._accepted
            while self._settled < target and self._sender.is_alive():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._settle.wait(min(remaining, 0.5))

    def wait_delivered(self, count: int, timeout: float) -> bool:
        """Wait until ``sent`` reaches ``count`` (tests and tools): True if it did within ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.stats()["sent"] < count:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        """Deliver what is queued (and spooled) for up to ``drain_timeout``; whatever is left stays on disk."""
        if self._closed or os.getpid() != self._pid:
            super().close()
            return
        self._closed = True
        _lifecycle.unregister(self)
        sender = self._sender
        if sender is not None:
            self._stop_deadline = time.monotonic() + self.drain_timeout
            self._stopping.set()
            sender.join(self.drain_timeout)
        leftovers: list[Any] = []
        while True:
            try:
                leftovers.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if leftovers:
            self._spool_items(leftovers, reason="closing")
        if self._spool.records:
            log.warning(
                "flocklog sink %s: %d records remain spooled in %s; the next start resends them",
                self._label(),
                self._spool.records,
                self._spool.directory,
            )
        if sender is None or not sender.is_alive():
            with contextlib.suppress(Exception):
                self.close_transport()
            self._spool.release()
        elif self._in_flight:
            log.warning(
                "flocklog sink %s: %d records still in flight to a receiver that has not answered within %s s; "
                "if this process exits now they may be lost",
                self._label(),
                self._in_flight,
                self.drain_timeout,
            )
        super().close()

    def _reset_after_fork(self) -> None:
        """In a forked child: a fresh queue, no sender, counters at zero; the parent's sink is untouched."""
        if self._pid == os.getpid():
            return
        self._spool.forget_after_fork()
        self._init_state()
        self.createLock()


def sink_stats(handlers: Sequence[logging.Handler]) -> dict[str, dict[str, int]]:
    """The ``stats()`` of every handler that has one, keyed by its name (or class name and position).

    For ``flocklog status``: ``data["sinks"] = sink_stats(self.handlers)`` in the hub's ``status()``.
    """
    out: dict[str, dict[str, int]] = {}
    for index, handler in enumerate(handlers):
        stats = getattr(handler, "stats", None)
        if not callable(stats):
            continue
        key = handler.get_name() or f"{type(handler).__name__}#{index}"
        try:
            value = stats()
        except Exception as exc:  # status must answer even if one sink's stats() is broken
            log.warning("flocklog: %r.stats() failed: %r", handler, exc)
            continue
        if isinstance(value, dict):
            out[key] = {str(k): int(v) for k, v in value.items() if isinstance(v, int)}
    return out
