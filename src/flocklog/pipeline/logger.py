"""ExecutionLogger: structured execution records that never block the request path and are never dropped silently.

``log()`` builds and checks the record (id and time made here, fields snapshotted), appends it to a bounded
in-memory buffer and returns. A background thread ships batches (50 records or 2 s by default) through the
transport — Celery by default — and when that fails puts the batch in a local spool (or writes it directly to the
database with ``fallback='direct'``), replaying spooled batches in order once the transport works again. A full
buffer spills its oldest records to the same spool (``when_full='spill'``, the default), so a burst faster than
the transport costs disk, not records. ``flush()`` and ``await aflush()`` wait until everything logged so far is
handed over (delivered, or in the spool while the transport is down); ``close()`` drains and never raises.

Whatever is given up on is counted in ``stats()`` and reported by a rate-limited warning on the ``flocklog``
logger (never through the pipeline itself: :class:`ExecutionLogHandler` ignores those records).

The sender is a Python thread, so whenever it runs the caller waits for the GIL: what it costs the caller is the
number of times it wakes up, times how long it runs. Hence callers never share a lock with it, wake it at most
once per batch, and a burst is shipped as a few large batches (``max_batch``, at most one per ``linger``).

The sender's half (delivery, replay, fallback, receipts) is :class:`flocklog.pipeline._sender.Sender`, this
class's base; the stdlib bridge is :mod:`flocklog.pipeline.handler`. Shared state (one ExecutionLogger):

| field                         | owner                                  | lock |
|-------------------------------|----------------------------------------|------|
| ``_buffer``                   | callers append, the sender pops        | ``_lock`` for callers; deque ops are atomic |
| ``_spilling``, caller counters| callers (``logged``, ``dropped_*``...) | ``_lock`` |
| ``_held``, sender counters    | the sender thread (close() after join) | none |
| ``_in_flight``, ``_flushers`` | the sender / flush()                   | ``_cond`` |
| ``_spool_dirty``              | anyone sets it, the sender clears it   | none (a bool; cleared before each replay) |
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from flocklog import _lifecycle
from flocklog._pipelinesettings import check_at_least, check_settings
from flocklog._pipelinesettings import max_record_bytes as env_max_record_bytes
from flocklog.errors import ConfigError, PipelineError, SerializationError
from flocklog.pipeline._reporter import Reporter
from flocklog.pipeline._sender import SPOOL_CHECK_INTERVAL, Sender
from flocklog.pipeline.spool import SpoolTransport
from flocklog.pipeline.transports import Transport
from flocklog.record import ExecutionRecord, _text_size

__all__ = ["ExecutionLogger"]

_POLICIES = ("spill", "block", "drop_newest", "drop_oldest")
#: Records a full buffer gives up per spill file (at most): the caller writes them, so this bounds its stall.
SPILL_RECORDS = 1000


class ExecutionLogger(Sender):
    """Buffer execution records locally and ship them in batches; see the module docstring for the guarantees."""

    def __init__(
        self,
        name: str = "app",
        *,
        transport: Transport | str | None = None,
        batch_size: int = 50,
        max_batch: int = 5000,
        linger: float = 0.1,
        flush_interval: float = 2.0,
        capacity: int = 10_000,
        when_full: str = "spill",
        fallback: str = "spool",
        broker_url: str | None = None,
        database_url: str | None = None,
        table: str | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        retry_interval: float = 1.0,
        drain_timeout: float = 10.0,
        max_record_bytes: int | None = None,
    ) -> None:
        if batch_size < 1 or capacity < batch_size:
            raise ConfigError(f"need 1 <= batch_size <= capacity, got batch_size={batch_size}, capacity={capacity}")
        if max_batch < batch_size:
            raise ConfigError(f"max_batch ({max_batch}) must be >= batch_size ({batch_size})")
        if flush_interval <= 0:
            raise ConfigError(f"flush_interval must be > 0 seconds, got {flush_interval}")
        if linger < 0 or linger >= flush_interval:
            raise ConfigError(f"linger must be >= 0 and below flush_interval, got {linger}")
        if when_full not in _POLICIES:
            raise ConfigError(f"when_full={when_full!r}: use one of {', '.join(_POLICIES)}")
        if fallback not in ("spool", "direct"):
            raise ConfigError(f"fallback={fallback!r}: use 'spool' or 'direct'")
        try:
            _text_size(name)
        except Exception as exc:
            raise ConfigError(f"logger name {name!r}: {exc}") from None
        if transport is None or isinstance(transport, str):
            check_settings(transport)  # the sender builds the transport later, where a mistake would only spool
        self.name = name
        self.batch_size = batch_size
        self.max_batch = max_batch
        self.linger = linger
        # A buffer this full is shipped without lingering: at most half the capacity, so a burst still has room
        # while the sender takes it (with a capacity near max_batch the buffer was full before the sender woke).
        self._full = min(max_batch, max(batch_size, capacity // 2))
        self.flush_interval = flush_interval
        self.capacity = capacity
        self.when_full = when_full
        self.fallback = fallback
        self.retry_interval = retry_interval
        self.drain_timeout = drain_timeout
        self.max_record_bytes = (
            env_max_record_bytes()
            if max_record_bytes is None
            else int(check_at_least(f"max_record_bytes={max_record_bytes!r}", max_record_bytes, 64))
        )
        # A spill is written by the caller: 1000 records (a few ms) at a time, however large a batch may be.
        self._spill_size = min(SPILL_RECORDS, max_batch, capacity)
        self._options: dict[str, Any] = {
            "broker_url": broker_url,
            "database_url": database_url,
            "table": table,
            "spool_dir": spool_dir,
        }
        self._transport_spec = transport
        self._transport: Transport | None = transport if not isinstance(transport, (str, type(None))) else None
        self._fallback: Transport | None = None
        self.spool = SpoolTransport(spool_dir)
        self._init_state()
        _lifecycle.register(
            self,
            stage=_lifecycle.Stage.PRODUCERS,
            after_fork=ExecutionLogger._after_fork,
            flush=ExecutionLogger._flush_at_sigterm,
            at_exit=ExecutionLogger._close_at_exit,
        )

    def _init_state(self) -> None:
        self._buffer: collections.deque[ExecutionRecord] = collections.deque()
        self._cond = threading.Condition()  # the sender's: waiting for work, flush() waiting for the sender
        self._lock = threading.Lock()  # the callers': appends, drops, counters and the closed flag
        self._woken = 0  # 0 idle, 1 woken for a batch, 2 woken for a full buffer (see _wake)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._flushers = 0
        self._in_flight = 0
        self._spilling = 0  # records a caller took out of the buffer and is writing to the spool
        self._held: list[tuple[str, list[ExecutionRecord]]] = []  # batches neither delivered nor spoolable yet
        self._healthy = True  # the last delivery round reached the transport
        self._spool_dirty = True  # check the spool for old batches once at start
        self._next_spool_check = time.monotonic() + SPOOL_CHECK_INTERVAL
        self._next_retry = 0.0
        self._next_replay = 0.0
        self._pause_until = 0.0
        self._last_send = -1e9
        self.counters = collections.Counter[str]()
        self._reporter = Reporter(self.name)

    # -- the caller's side: never blocks (unless when_full='block')
    def log(
        self, level: int | str, message: object, /, fields: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> ExecutionRecord:
        """Record one execution event; returns it at once (with its id).

        ``level`` is a number or a ``logging`` name (``"INFO"``); a message that is not text becomes
        ``str(message)``, as in ``logging``. Fields come as keywords, or as a ``fields`` mapping for names a
        keyword cannot carry (``fields={"level": ..., "fields": ...}``); both may be given. A record no store could
        hold raises :class:`~flocklog.SerializationError` here, and nothing is buffered.
        """
        if fields is not None:
            if not isinstance(fields, Mapping):
                raise SerializationError(
                    f"fields= must be a mapping of field names to values, not {type(fields).__name__}"
                )
            kwargs = {**fields, **kwargs}
        record = ExecutionRecord.build(level, message, self.name, kwargs, self.max_record_bytes)
        buffer = self._buffer
        spill: list[ExecutionRecord] = []
        dropped = ""
        while True:
            # Callers serialise on their own lock, which the sender never takes: the sender pops from the deque
            # (thread-safe on its own) under the condition's lock. A caller that shared a lock with the sender
            # would hand the GIL back and forth with it on every collision, and that is the caller's tail latency.
            with self._lock:
                if self._closed:
                    raise PipelineError("this ExecutionLogger is closed")
                if len(buffer) >= self.capacity:
                    policy = self.when_full
                    if policy == "spill":
                        # The oldest records go to disk (the sender replays them first, so order is kept) and this
                        # caller pays one file write per SPILL_RECORDS records; memory stays bounded.
                        for _ in range(self._spill_size):
                            try:
                                spill.append(buffer.popleft())
                            except IndexError:  # the sender took them meanwhile
                                break
                        self._spilling += len(spill)
                    elif policy == "drop_newest":
                        self.counters["dropped_newest"] += 1
                        dropped = "drop_newest"
                        break
                    elif policy == "drop_oldest":
                        try:
                            buffer.popleft()
                            self.counters["dropped_oldest"] += 1
                            dropped = "drop_oldest"
                        except IndexError:
                            pass
                if len(buffer) < self.capacity or self.when_full != "block":
                    buffer.append(record)
                    self.counters["logged"] += 1
                    size = len(buffer)
                    break
            with self._cond:  # when_full='block': wait for the sender to make room
                self._cond.wait(0.1)
        if spill:
            self._spill(spill)
        if dropped:
            self._reporter.note(f"dropped_{dropped[5:]}", 1, f"buffer full, a record was dropped ({dropped})")
            if dropped == "drop_newest":
                return record
        if self._thread is None or size >= self.batch_size:
            self._wake(size)
        return record

    def _spill(self, records: list[ExecutionRecord]) -> None:
        """Write records a full buffer gave up to the spool, in the caller (one write per SPILL_RECORDS records).

        No fsync: the page cache survives the process being killed, which is what the memory buffer did not.
        """
        try:
            self.spool.send(records, uuid.uuid4().hex, fsync=False)
        except Exception as exc:
            with self._lock:
                self._spilling -= len(records)
                self.counters["dropped_spill_failed"] += len(records)
            self._reporter.note(
                "dropped_spill_failed",
                len(records),
                f"buffer full and the spool {self.spool.directory} refused them ({exc}): records dropped",
            )
            return
        self._spool_dirty = True  # before the count goes down, so flush() never sees neither
        with self._lock:
            self._spilling -= len(records)
            self.counters["spilled"] += len(records)
        self._wake(len(self._buffer))

    def _wake(self, size: int) -> None:
        """Start the sender, or wake it once per level (a batch is ready; the buffer is full enough to skip the
        linger): a sender woken by every call would cost the caller a GIL hand-off each time."""
        if self._thread is not None and self._level(size) <= self._woken:
            return  # the sender already knows: it takes a batch before it waits again
        with self._cond:
            if self._thread is None:
                self._start()
            # Judge by the buffer as it is now, not by ``size``: the sender may have taken those records since,
            # and a level set for records already gone would make later callers skip a wake-up it needs.
            level = self._level(len(self._buffer))
            if level > self._woken:
                self._woken = level
                self._cond.notify_all()

    def debug(self, message: object, /, fields: Mapping[str, Any] | None = None, **kwargs: Any) -> ExecutionRecord:
        return self.log(logging.DEBUG, message, fields, **kwargs)

    def info(self, message: object, /, fields: Mapping[str, Any] | None = None, **kwargs: Any) -> ExecutionRecord:
        return self.log(logging.INFO, message, fields, **kwargs)

    def warning(self, message: object, /, fields: Mapping[str, Any] | None = None, **kwargs: Any) -> ExecutionRecord:
        return self.log(logging.WARNING, message, fields, **kwargs)

    def error(self, message: object, /, fields: Mapping[str, Any] | None = None, **kwargs: Any) -> ExecutionRecord:
        return self.log(logging.ERROR, message, fields, **kwargs)

    def _unsettled(self) -> bool:
        """Is something logged not yet handed over? (In memory, being spilled, held after a failed spool write,
        or in the spool while the transport works and could take it.)"""
        return bool(
            self._buffer or self._in_flight or self._spilling or self._held or (self._spool_dirty and self._healthy)
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record logged so far is handed over: delivered to the transport, or in the spool
        while the transport is failing. False if ``timeout`` ran out first (nothing is lost: the sender goes on)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._thread is None and self._unsettled():
                self._start()
            self._flushers += 1
            self._cond.notify_all()
            try:
                while self._unsettled():
                    if self._thread is None or not self._thread.is_alive():
                        return False  # closed, or forked away from its sender: nobody will settle it
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(0.05 if remaining is None else min(remaining, 0.05))
            finally:
                self._flushers -= 1
        return True

    async def aflush(self, timeout: float | None = None) -> bool:
        """``flush()`` for asyncio code: waits in a worker thread, never on the event loop."""
        return await asyncio.get_running_loop().run_in_executor(None, self.flush, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Drain (deliver or spool everything) and stop the sender. Never raises: what cannot be placed anywhere
        (the spool's disk is full too) is counted in ``stats()`` and reported on the ``flocklog`` logger."""
        if self._closed:
            return
        try:
            self._close(self.drain_timeout if timeout is None else timeout)
        except Exception as exc:
            self.counters["close_errors"] += 1
            self._reporter.note("close_errors", 1, f"close() failed: {exc!r}")
        self._reporter.flush()
        _lifecycle.unregister(self)

    def _close(self, budget: float) -> None:
        deadline = time.monotonic() + budget
        self.flush(budget)
        self._await_receipts(deadline)
        with self._lock, self._cond:
            self._closed = True
            leftover = list(self._buffer)
            self._buffer.clear()
            self._cond.notify_all()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=max(1.0, deadline - time.monotonic()))
            if thread.is_alive() and self._in_flight:  # stuck in a send (bounded by the transport's timeouts)
                self.counters["abandoned_in_flight"] += self._in_flight
                self._reporter.note(
                    "abandoned_in_flight", self._in_flight, "the sender was still sending at close(): records lost"
                )
        held, self._held = self._held, []
        if leftover:
            held.append((uuid.uuid4().hex, leftover))
        for batch_id, records in held:
            self._spool_or_drop(batch_id, records, "dropped_at_close")
        self._spool_unconfirmed()
        for transport in (self._transport, self._fallback):
            if transport is not None:
                try:
                    transport.close()
                except Exception:
                    self.counters["close_errors"] += 1

    def _flush_at_sigterm(self) -> None:
        self.flush(self.drain_timeout)

    def _close_at_exit(self) -> None:
        self.close(timeout=self.drain_timeout)

    def stats(self) -> dict[str, int]:
        """Counters (logged, sent, spilled, spooled, replayed, dropped_* ...), ``dropped`` (their total), what is
        buffered, held and in the spool."""
        data = dict(self.counters)
        data["dropped"] = sum(count for key, count in data.items() if key.startswith("dropped_"))
        data["buffered"] = len(self._buffer)
        data["held"] = sum(len(records) for _, records in self._held)
        data["spool_batches"], data["spool_records"] = self.spool.backlog()
        return data

    # -- the sender thread
    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"flocklog-exec-{self.name}", daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        # The child must not resend the parent's buffered records (the parent will), nor share its thread or locks.
        transport = self._transport_spec
        self._transport = transport if not isinstance(transport, (str, type(None))) else None
        self._fallback = None
        self._init_state()
        self._spool_dirty = False
