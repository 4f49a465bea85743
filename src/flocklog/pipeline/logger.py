"""ExecutionLogger: structured execution/audit records that never block the request path.

``log()`` builds the record (id and time made here), appends it to a bounded in-memory buffer and returns. A
background thread ships batches (50 records or 2 s by default) through the transport — Celery by default — and
when that fails puts the batch in a local spool (or writes it directly to the database with
``fallback='direct'``), replaying spooled batches in order once the transport works again. ``flush()`` and
``await aflush()`` wait until everything logged so far is delivered or spooled; ``close()`` drains.

The sender is a Python thread, so whenever it runs the caller waits for the GIL: what it costs the caller is the
number of times it wakes up, times how long it runs. Hence callers never share a lock with it, wake it at most
once per batch, and a burst is shipped as a few large batches (``max_batch``, at most one per ``linger``) instead
of many small ones — see benchmarks/pipeline.py for what that buys.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from flocklog import _lifecycle
from flocklog.errors import ConfigError, PipelineError
from flocklog.pipeline.record import ExecutionRecord
from flocklog.pipeline.transports import SpoolTransport, Transport, check_settings, make_transport, replay_spool

_POLICIES = ("block", "drop_newest", "drop_oldest")


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
        when_full: str = "drop_oldest",
        fallback: str = "spool",
        broker_url: str | None = None,
        database_url: str | None = None,
        table: str | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        retry_interval: float = 1.0,
        drain_timeout: float = 10.0,
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
        self._flush_wanted = False
        self._in_flight = 0
        self._spool_dirty = True  # check the spool for old batches once at start
        self._next_retry = 0.0
        self._last_send = -1e9
        self.counters = collections.Counter[str]()

    # -- the caller's side: never blocks (unless when_full='block')
    def log(self, level: int, message: str, **fields: Any) -> ExecutionRecord:
        """Record one execution event; returns it at once (with its id). Bad fields raise SerializationError."""
        record = ExecutionRecord.create(level, message, self.name, **fields)
        buffer = self._buffer
        while True:
            # Callers serialise on their own lock, which the sender never takes: the sender pops from the deque
            # (thread-safe on its own) under the condition's lock. A caller that shared a lock with the sender
            # would hand the GIL back and forth with it on every collision, and that is the caller's tail latency.
            with self._lock:
                if self._closed:
                    raise PipelineError("this ExecutionLogger is closed")
                if len(buffer) >= self.capacity:
                    if self.when_full == "drop_newest":
                        self.counters["dropped_newest"] += 1
                        return record
                    if self.when_full == "drop_oldest":
                        try:
                            buffer.popleft()
                            self.counters["dropped_oldest"] += 1
                        except IndexError:  # the sender took them all meanwhile
                            pass
                if len(buffer) < self.capacity or self.when_full != "block":
                    buffer.append(record)
                    self.counters["logged"] += 1
                    size = len(buffer)
                    break
            with self._cond:  # when_full='block': wait for the sender to make room
                self._cond.wait(0.1)
        if self._thread is None or size >= self.batch_size:
            self._wake(size)
        return record

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

    def debug(self, message: str, **fields: Any) -> ExecutionRecord:
        return self.log(logging.DEBUG, message, **fields)

    def info(self, message: str, **fields: Any) -> ExecutionRecord:
        return self.log(logging.INFO, message, **fields)

    def warning(self, message: str, **fields: Any) -> ExecutionRecord:
        return self.log(logging.WARNING, message, **fields)

    def error(self, message: str, **fields: Any) -> ExecutionRecord:
        return self.log(logging.ERROR, message, **fields)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record logged so far is delivered or spooled; False if ``timeout`` ran out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._thread is None and (self._buffer or self._spool_dirty):
                self._start()
            self._flush_wanted = True
            self._cond.notify_all()
            while self._buffer or self._in_flight:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(0.05 if remaining is None else min(remaining, 0.05))
            self._flush_wanted = False
        return True

    async def aflush(self, timeout: float | None = None) -> bool:
        """``flush()`` for asyncio code: waits in a worker thread, never on the event loop."""
        return await asyncio.get_running_loop().run_in_executor(None, self.flush, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Drain (deliver or spool everything) and stop the sender. Records still in memory at the deadline are
        spooled, never dropped."""
        if self._closed:
            return
        budget = self.drain_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        self.flush(budget)
        self._await_receipts(deadline)
        with self._lock, self._cond:
            self._closed = True
            leftover = list(self._buffer)
            self._buffer.clear()
            self._cond.notify_all()
        if leftover:
            self.spool.send(leftover)
            self.counters["spooled"] += len(leftover)
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        self._spool_unconfirmed()
        for transport in (self._transport, self._fallback):
            if transport is not None:
                try:
                    transport.close()
                except Exception:
                    self.counters["close_errors"] += 1
        _lifecycle.unregister(self)

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
        """Batches still without a receipt at exit go to the spool: a duplicate is harmless, a loss is not."""
        overdue = getattr(self._transport, "overdue", None)
        if overdue is None:
            return
        for _, records in overdue(everything=True):
            self.spool.send(records)
            self.counters["spooled_unconfirmed"] += len(records)
        getattr(self._transport, "outstanding", {}).clear()

    def stats(self) -> dict[str, int]:
        data = dict(self.counters)
        data["buffered"] = len(self._buffer)
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
        closing, flushing or the buffer is full enough; a ready batch after ``linger``; anything at ``deadline``."""
        if self._closed or self._flush_wanted:
            return 0.0
        level = self._level(len(self._buffer))
        if level == 2:
            return 0.0
        due = min(deadline, self._last_send + self.linger) if level == 1 else deadline
        return max(0.0, due - time.monotonic())

    def _run(self) -> None:
        while True:
            with self._cond:
                deadline = time.monotonic() + self.flush_interval
                while (wait := self._due_in(deadline)) > 0:
                    self._cond.wait(wait)
                if self._closed:
                    return
                # A flush starts at batch_size records, but whatever piled up while the previous batch was on its
                # way goes along (up to max_batch): a burst then costs a few large tasks, which the worker COPYs,
                # instead of hundreds of small ones. Under a steady trickle batches stay at batch_size.
                batch = [self._buffer.popleft() for _ in range(min(self.max_batch, len(self._buffer)))]
                self._in_flight = len(batch)
                self._last_send = time.monotonic()
                self._woken = self._level(len(self._buffer))
                self._cond.notify_all()  # room for a blocked caller
            try:
                self._deliver(batch)
            finally:
                with self._cond:
                    self._in_flight = 0
                    self._cond.notify_all()

    def _resend_overdue(self, primary: Transport, *, everything: bool = False) -> None:
        overdue = getattr(primary, "overdue", None)
        if overdue is None:
            return
        for batch_id, records in overdue(everything=everything):
            try:
                primary.send(records, batch_id=batch_id)
                self.counters["resent"] += len(records)
            except Exception as exc:
                self._report(f"resend failed: {exc}")
                self.spool.send(records)
                self._spool_dirty = True
                self.counters["spooled"] += len(records)
                getattr(primary, "outstanding", {}).pop(batch_id, None)

    def _deliver(self, batch: Sequence[ExecutionRecord]) -> None:
        now = time.monotonic()
        try:
            primary = self._primary()
        except Exception as exc:
            self._report(f"transport could not be set up: {exc}")
            primary = None
        if primary is not None and now >= self._next_retry:
            try:
                if self._spool_dirty:  # older spooled batches go first, so order is kept
                    self.counters["replayed"] += replay_spool(self.spool, primary)
                    self._spool_dirty = False
                if batch:
                    primary.send(batch)
                    self.counters["sent"] += len(batch)
                    self.counters["batches"] += 1
                self._resend_overdue(primary)
                return
            except Exception as exc:
                self._next_retry = now + self.retry_interval
                self._report(f"{primary.name} transport failed: {exc}")
        if batch:
            self._fall_back(batch)

    def _fall_back(self, batch: Sequence[ExecutionRecord]) -> None:
        if self.fallback == "direct":
            try:
                if self._fallback is None:
                    self._fallback = make_transport("direct", **self._options)
                self._fallback.send(batch)
                self.counters["direct"] += len(batch)
                return
            except Exception as exc:
                self._report(f"direct fallback failed: {exc}")
        self.spool.send(batch)
        self._spool_dirty = True
        self.counters["spooled"] += len(batch)

    def _report(self, message: str) -> None:
        self.counters["transport_errors"] += 1
        if self.counters["transport_errors"] in (1, 10, 100, 1000) or self.counters["transport_errors"] % 10000 == 0:
            os.write(2, f"flocklog: execution log {self.name!r}: {message} (batches go to the spool)\n".encode())


class ExecutionLogHandler(logging.Handler):
    """A logging handler that puts stdlib records into an :class:`ExecutionLogger` (same pipeline, same store)."""

    def __init__(self, execution_logger: ExecutionLogger | None = None, level: int = logging.NOTSET, **options: Any):
        super().__init__(level)
        self.execution_logger = execution_logger or ExecutionLogger(options.pop("name", "logging"), **options)

    def emit(self, record: logging.LogRecord) -> None:
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
