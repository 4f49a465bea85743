"""The sender thread of an :class:`~flocklog.pipeline.logger.ExecutionLogger`: what leaves the buffer, and where.

Each round takes a batch, replays older spooled batches first (order is kept), sends through the transport, resends
batches whose receipt is overdue, and puts whatever the transport does not take in the fallback (the spool, or the
database with ``fallback='direct'``). Only a batch nothing can take (the spool's disk is full too) stays held in
memory, bounded by ``capacity``. At exit, batches still without a receipt go to the spool under their own id.

The caller's side (``log()``, ``flush()``, ``close()``, the buffer) is :mod:`flocklog.pipeline.logger`; this class
is its base, so the two share one object. The sender's own fields:

| field                                       | owner              | lock |
|---------------------------------------------|--------------------|------|
| ``_transport``, ``_fallback``               | the sender (built lazily; close() after join) | none |
| ``_held``, ``_healthy``                     | the sender; flush() reads them | none (replaced whole) |
| ``_next_retry``, ``_next_replay``, ``_next_spool_check``, ``_pause_until`` | the sender | none |
| ``_in_flight``, ``_woken``, ``_last_send``  | the sender, under the condition | ``_cond`` |
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from typing import Any

from flocklog.pipeline._reporter import Reporter
from flocklog.pipeline.spool import SpoolTransport
from flocklog.pipeline.transports import Transport, make_transport, replay_spool
from flocklog.record import ExecutionRecord

__all__ = ["SPOOL_CHECK_INTERVAL", "Sender"]

#: A spool check every so often even when this process spooled nothing: another process sharing the directory
#: may have left batches (it exited while the broker was down, or was killed mid-replay).
SPOOL_CHECK_INTERVAL = 10.0


class Sender:
    """The delivery half of an ExecutionLogger (its base class); the fields below are set by its ``__init__``."""

    name: str
    batch_size: int
    max_batch: int
    linger: float
    flush_interval: float
    capacity: int
    fallback: str
    retry_interval: float
    spool: SpoolTransport
    counters: collections.Counter[str]
    _full: int
    _options: dict[str, Any]
    _transport_spec: Transport | str | None
    _transport: Transport | None
    _fallback: Transport | None
    _buffer: collections.deque[ExecutionRecord]
    _cond: threading.Condition
    _closed: bool
    _flushers: int
    _in_flight: int
    _woken: int
    _held: list[tuple[str, list[ExecutionRecord]]]
    _healthy: bool
    _spool_dirty: bool
    _next_spool_check: float
    _next_retry: float
    _next_replay: float
    _pause_until: float
    _last_send: float
    _reporter: Reporter

    def _level(self, size: int) -> int:
        return 2 if size >= self._full else 1 if size >= self.batch_size else 0

    def _spool_or_drop(self, batch_id: str, records: list[ExecutionRecord], reason: str) -> None:
        try:
            self.spool.send(records, batch_id)
            self.counters["spooled"] += len(records)
        except Exception as exc:
            self.counters[reason] += len(records)
            self._reporter.note(reason, len(records), f"spool {self.spool.directory} failed ({exc}): records lost")

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
            replay_spool(self.spool, primary, counts=self.counters)  # counts "replayed" as it goes
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
