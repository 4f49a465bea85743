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

Shared state (one ExecutionLogger):

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
import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from flocklog import _lifecycle
from flocklog.errors import ConfigError, PipelineError, SerializationError
from flocklog.pipeline.settings import check_at_least, check_settings
from flocklog.pipeline.settings import max_record_bytes as env_max_record_bytes
from flocklog.pipeline.spool import SpoolTransport
from flocklog.pipeline.transports import Transport, make_transport, replay_spool
from flocklog.record import ExecutionRecord, _text_size

__all__ = ["ExecutionLogHandler", "ExecutionLogger"]

_POLICIES = ("spill", "block", "drop_newest", "drop_oldest")
#: Records of the ``flocklog`` logger that carry this attribute are flocklog's own reports:
#: :class:`ExecutionLogHandler` never feeds them back into a pipeline.
INTERNAL = "flocklog_internal"
_log = logging.getLogger("flocklog")
#: A spool check every so often even when this process spooled nothing: another process sharing the directory
#: may have left batches (it exited while the broker was down, or was killed mid-replay).
SPOOL_CHECK_INTERVAL = 10.0


class _Reporter:
    """Rate-limited warnings on the ``flocklog`` logger: the first of each kind at once, then at most one per
    ``interval`` seconds with the count since the previous one; :meth:`flush` says what is left (at close)."""

    def __init__(self, name: str, interval: float = 10.0) -> None:
        self.name = name
        self.interval = interval
        self._lock = threading.Lock()
        self._pending: collections.Counter[str] = collections.Counter()
        self._detail: dict[str, str] = {}
        self._last: dict[str, float] = {}

    def note(self, kind: str, count: int, detail: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._pending[kind] += count
            self._detail[kind] = detail
            if now - self._last.get(kind, -1e18) < self.interval:
                return
            self._last[kind] = now
            count = self._pending.pop(kind)
        self._emit(kind, count, detail)

    def flush(self) -> None:
        with self._lock:
            pending = [(kind, count, self._detail[kind]) for kind, count in self._pending.items() if count]
            self._pending.clear()
        for kind, count, detail in pending:
            self._emit(kind, count, detail)

    def _emit(self, kind: str, count: int, detail: str) -> None:
        # A broken handler of the application's must not take the pipeline down.
        with contextlib.suppress(Exception):
            _log.warning(
                "execution log %r: %s (%s: %d since the last warning; totals in stats())",
                self.name,
                detail,
                kind,
                count,
                extra={INTERNAL: True},
            )


class ExecutionLogger:
    """Buffer execution records locally and ship them in batches; see the module docstring for the guarantees."""

    def __init__(
        self,
        name: str = "app",
        *,
        transport: Transport | str | None = None,
        batch_size: int = 50,
        max_batch: int = 1000,
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
        self._full = min(max_batch, capacity)  # a buffer this full is shipped without lingering
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
        self._spill_size = min(max_batch, capacity)
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
        self._reporter = _Reporter(self.name)

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
                        # caller pays one file write per ``max_batch`` records; memory stays bounded.
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
        """Write records a full buffer gave up to the spool, in the caller (one write per ``max_batch`` records).

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

    def _level(self, size: int) -> int:
        return 2 if size >= self._full else 1 if size >= self.batch_size else 0

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

    def _spool_or_drop(self, batch_id: str, records: list[ExecutionRecord], reason: str) -> None:
        try:
            self.spool.send(records, batch_id)
            self.counters["spooled"] += len(records)
        except Exception as exc:
            self.counters[reason] += len(records)
            self._reporter.note(reason, len(records), f"spool {self.spool.directory} failed ({exc}): records lost")

    def _flush_at_sigterm(self) -> None:
        self.flush(self.drain_timeout)

    def _close_at_exit(self) -> None:
        self.close(timeout=self.drain_timeout)

    def _await_receipts(self, deadline: float) -> None:
        """Before exit, give the worker's receipts time to arrive (the sender resends overdue batches meanwhile)."""
        outstanding: dict[str, Any] | None = getattr(self._transport, "outstanding", None)
        overdue = getattr(self._transport, "overdue", None)
        while outstanding and overdue is not None and time.monotonic() < deadline:
            unconfirmed = overdue(everything=True)  # drops what is confirmed
            if not unconfirmed:
                break
            time.sleep(0.1)

    def _spool_unconfirmed(self) -> None:
        """Batches still without a receipt at exit go to the spool under their own batch id: whoever replays the
        spool later asks the broker first and deletes those the worker confirmed meanwhile (no resend)."""
        overdue = getattr(self._transport, "overdue", None)
        if overdue is None:
            return
        try:
            unconfirmed = overdue(everything=True)
        except Exception:
            unconfirmed = [(batch_id, records) for batch_id, (_, records) in self._outstanding().items()]
        if not unconfirmed and self._outstanding():  # Redis unreachable: every outstanding batch is unconfirmed
            unconfirmed = [(batch_id, records) for batch_id, (_, records) in self._outstanding().items()]
        for batch_id, records in unconfirmed:
            self._spool_or_drop(batch_id, records, "dropped_at_close")
            self.counters["spooled_unconfirmed"] += len(records)
        self._outstanding().clear()

    def _outstanding(self) -> dict[str, tuple[float, list[ExecutionRecord]]]:
        outstanding: dict[str, tuple[float, list[ExecutionRecord]]] = getattr(self._transport, "outstanding", {})
        return outstanding

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

    def _primary(self) -> Transport:
        if self._transport is None:
            spec = self._transport_spec if isinstance(self._transport_spec, str) else None
            self._transport = make_transport(spec, **self._options)
        return self._transport

    def _due_in(self, deadline: float) -> float:
        """Seconds until the sender should take a batch, 0 for now (called with the condition held): at once when
        closing, flushing or the buffer is full enough; a ready batch after ``linger``; anything at ``deadline``.
        A flush that waits on a failing transport or disk is retried every so often, not in a busy loop."""
        if self._closed:
            return 0.0
        now = time.monotonic()
        if self._flushers and (self._buffer or self._held or (self._spool_dirty and self._healthy)):
            return max(0.0, self._pause_until - now)
        level = self._level(len(self._buffer))
        if level == 2:
            return 0.0
        due = min(deadline, self._last_send + self.linger) if level == 1 else deadline
        return max(0.0, due - now)

    def _run(self) -> None:
        while True:
            try:
                with self._cond:
                    deadline = time.monotonic() + self.flush_interval
                    while (wait := self._due_in(deadline)) > 0:
                        self._cond.wait(wait)
                    if self._closed:
                        return
                    # A flush starts at batch_size records, but whatever piled up while the previous batch was on
                    # its way goes along (up to max_batch): a burst then costs a few large tasks, which the worker
                    # COPYs, instead of hundreds of small ones. Under a steady trickle batches stay at batch_size.
                    batch = [self._buffer.popleft() for _ in range(min(self.max_batch, len(self._buffer)))]
                    held, self._held = self._held, []  # counted in flight until placed or held again
                    self._in_flight = len(batch) + sum(len(records) for _, records in held)
                    self._last_send = time.monotonic()
                    self._woken = self._level(len(self._buffer))
                    self._cond.notify_all()  # room for a blocked caller
                try:
                    self._deliver(held, batch)
                except Exception as exc:  # the sender never dies: keep the batches and say why
                    for batch_id, records in held:
                        self._hold(batch_id, records)
                    self._hold(uuid.uuid4().hex, batch)
                    self._note_failure("sender_errors", f"unexpected error while sending: {exc!r}")
                finally:
                    with self._cond:
                        self._in_flight = 0
                        self._cond.notify_all()
            except Exception as exc:  # even the bookkeeping above failed: wait a moment and go on
                self._note_failure("sender_errors", f"unexpected sender error: {exc!r}")
                time.sleep(self.retry_interval)

    def _note_failure(self, kind: str, detail: str) -> None:
        self.counters[kind] += 1
        self._pause_until = time.monotonic() + min(self.retry_interval, 0.5)
        self._reporter.note(kind, 1, detail)

    def _resend_overdue(self, primary: Transport, *, everything: bool = False) -> None:
        overdue = getattr(primary, "overdue", None)
        if overdue is None:
            return
        for batch_id, records in overdue(everything=everything):
            try:
                primary.send(records, batch_id=batch_id)
                self.counters["resent"] += len(records)
            except Exception as exc:
                self._note_failure("transport_errors", f"resend failed: {exc}; the batch goes to the spool")
                self._outstanding().pop(batch_id, None)
                self._fall_back(batch_id, records)

    def _deliver(self, held: list[tuple[str, list[ExecutionRecord]]], batch: list[ExecutionRecord]) -> None:
        """One round: older spooled batches, then held ones, then ``batch``; whatever the transport does not take
        goes to the fallback. Only a batch nothing can take (the spool's disk is full too) stays held."""
        now = time.monotonic()
        pending = list(held)
        if batch:
            pending.append((uuid.uuid4().hex, batch))
        if now >= self._next_spool_check:
            self._next_spool_check = now + SPOOL_CHECK_INTERVAL
            self._spool_dirty = True
        primary: Transport | None = None
        if now >= self._next_retry:
            try:
                primary = self._primary()
            except Exception as exc:
                self._next_retry = now + self.retry_interval
                self._note_failure("transport_errors", f"transport could not be set up: {exc}")
        if primary is not None:
            replayed = self._replay(primary, now)
            try:
                while pending:
                    batch_id, records = pending[0]
                    primary.send(records, batch_id=batch_id)
                    pending.pop(0)
                    self.counters["sent"] += len(records)
                    self.counters["batches"] += 1
                self._resend_overdue(primary)
                self._healthy = replayed
            except Exception as exc:
                self._next_retry = now + self.retry_interval
                self._healthy = False
                self._note_failure("transport_errors", f"{primary.name} transport failed: {exc}; spooling")
        elif self._spool_dirty:
            self._healthy = False  # the spool waits for the transport's next retry
        for batch_id, records in pending:
            self._fall_back(batch_id, records)

    def _replay(self, primary: Transport, now: float) -> bool:
        """Older spooled batches go first, so order is kept; False if some are left for a later round.

        A replay that fails (the broker is down, or a spool file the transport refuses) is retried after
        ``retry_interval``, and never keeps this round's fresh batches from being sent.
        """
        if isinstance(primary, SpoolTransport):
            self._spool_dirty = False  # the spool is the destination: nothing to replay into itself
            return True
        if not self._spool_dirty:
            return True
        if now < self._next_replay:
            return False
        self._spool_dirty = False  # before the replay: a spill during it sets it again
        try:
            self.counters["replayed"] += replay_spool(self.spool, primary, counts=self.counters)
            return True
        except Exception as exc:
            self._spool_dirty = True
            self._next_replay = now + self.retry_interval
            self._note_failure("replay_errors", f"spool replay to {primary.name} failed: {exc}; retrying later")
            return False

    def _fall_back(self, batch_id: str, records: list[ExecutionRecord]) -> None:
        if self.fallback == "direct":
            try:
                if self._fallback is None:
                    self._fallback = make_transport("direct", **self._options)
                self._fallback.send(records, batch_id=batch_id)
                self.counters["direct"] += len(records)
                return
            except Exception as exc:
                self._note_failure("transport_errors", f"direct fallback failed: {exc}")
        try:
            self.spool.send(records, batch_id)
        except Exception as exc:
            if len(records) > self.batch_size:  # smaller files fit into what space a full disk gets back
                for start in range(0, len(records), self.batch_size):
                    self._hold(uuid.uuid4().hex, records[start : start + self.batch_size])
            else:
                self._hold(batch_id, records)
            self._note_failure("spool_errors", f"spool {self.spool.directory} failed ({exc}); records held in memory")
            return
        self._spool_dirty = True
        self.counters["spooled"] += len(records)

    def _hold(self, batch_id: str, records: list[ExecutionRecord]) -> None:
        """Keep a batch nothing could take for the next round; beyond ``capacity`` held records the oldest go,
        counted and reported (memory must stay bounded while both the transport and the disk fail)."""
        if not records:
            return
        self._held.append((batch_id, records))
        held = sum(len(r) for _, r in self._held)
        while held > self.capacity and self._held:
            _, oldest = self._held.pop(0)
            held -= len(oldest)
            self.counters["dropped_spool_failed"] += len(oldest)
            self._reporter.note(
                "dropped_spool_failed", len(oldest), "transport and spool both failing, memory full: records dropped"
            )


class ExecutionLogHandler(logging.Handler):
    """A logging handler that puts stdlib records into an :class:`ExecutionLogger` (same pipeline, same store).

    flocklog's own warnings about the pipeline (records carrying ``flocklog_internal``) are never fed back into
    it: a pipeline reporting its own trouble through itself would loop, or lose the report with the records.
    """

    def __init__(self, execution_logger: ExecutionLogger | None = None, level: int = logging.NOTSET, **options: Any):
        super().__init__(level)
        self.execution_logger = execution_logger or ExecutionLogger(options.pop("name", "logging"), **options)

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, INTERNAL, False):
            return
        try:
            fields: dict[str, Any] = {"module": record.module, "lineno": record.lineno, "func": record.funcName}
            if record.exc_info:
                fields["exc_text"] = logging.Formatter().formatException(record.exc_info)
            self.execution_logger.log(record.levelno, self.format(record), logger_name=record.name, **fields)
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.execution_logger.flush(timeout=self.execution_logger.drain_timeout)

    def close(self) -> None:
        self.execution_logger.close()
        super().close()
