"""The hub's writer: the one thread that touches the handlers, writing each batch once and acking it.

It takes batches from the queue the connection loop fills, all those waiting at once as one group (a group commit:
one journal begin and done, one write per file, one wake-up of the loop for every ack), decodes them a chunk of
records at a time (:func:`frames.read_record`), de-duplicates by ``(client id, batch seq)`` against the exactly-once
journal (:mod:`._dedup`, begin before the group and done after it), hands each chunk to every handler (flocklog's
file handlers take it with one ``os.write``) and posts the acks. At start it rolls back the batch a killed
predecessor left unfinished. It never dies of a batch: an error is counted and the next batch is written.

| field                                 | owner thread                         | lock                         |
|---------------------------------------|--------------------------------------|------------------------------|
| ``handlers``, ``files``, ``dedup``    | whoever writes: the writer, or the   | ``commit_lock``              |
|                                       | loop for a small batch (commit_now)  |                              |
| ``client_stats``                      | as above; status() copies values     | ``commit_lock`` (dict reads  |
|                                       |                                      | are atomic for status)       |
| ``queue``                             | loop -> writer                       | ``queue.Queue``              |
| counters                              | via ``count``/``add_counts``         | the hub's ``_counter_lock``  |
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from flocklog.errors import FrameError
from flocklog.hub import _crashpoints, frames
from flocklog.hub._crashpoints import CrashPoints
from flocklog.hub._dedup import Watermarks, file_marks, roll_back
from flocklog.hub._loop import MIN_RECORD_SIZE, Conn, Loop, decoded_cost

log = logging.getLogger("flocklog.hub")

MAX_TRACKED_CLIENTS = 100_000
_WRITE_CHUNK = 512
#: The largest batch (its cost in the memory account) the loop thread commits itself while the writer is idle: a
#: few hundred records, well under a millisecond of decoding, so the loop's other connections barely wait.
INLINE_MAX_COST = 64 * 1024
#: Queue items besides ``(conn, frame, cost)``: reopen every handler's file; stop the writer.
REOPEN = object()
STOP = object()


def writer_reserve(max_frame: int) -> int:
    """The most decoding one frame can cost the writer: a frame of ``max_frame`` of the smallest records."""
    return decoded_cost(max_frame, max_frame // MIN_RECORD_SIZE, _WRITE_CHUNK)


def reopen_handler(handler: logging.Handler) -> None:
    """Reopen a handler's file (after logrotate moved it): its own ``reopen`` hook, else close and reopen."""
    hook = getattr(handler, "reopen", None)
    if callable(hook):
        hook()
        return
    if isinstance(handler, logging.FileHandler):
        handler.acquire()
        try:
            if handler.stream is not None:
                handler.stream.flush()
                handler.stream.close()
            handler.stream = handler._open()
        finally:
            handler.release()


class BatchWriter:
    """Writes the batches of ``queue`` through ``handlers``; ``run`` is the writer thread."""

    def __init__(
        self,
        handlers: Sequence[logging.Handler],
        queue: queue.Queue[Any],
        loop: Loop,
        *,
        dedup: Watermarks,
        crash: CrashPoints | None,
        count: Callable[..., None],
        add_counts: Callable[[dict[str, int]], None],
    ) -> None:
        self.handlers = list(handlers)
        self.queue = queue
        self.loop = loop
        self.dedup = dedup
        self.crash = crash
        self.count = count
        self.add_counts = add_counts
        self.client_stats: dict[str, tuple[int, int]] = {}
        self.files = [h for h in self.handlers if isinstance(getattr(h, "baseFilename", None), str)]
        #: Held by whichever thread is writing: the writer, or the loop committing a small batch itself.
        self.commit_lock = threading.Lock()
        # Only flocklog's own file handlers on regular files, with no filters (a chunk in one write to the page
        # cache: their ``writes_without_waiting``) may be written from the loop: a sink, a stream, a FIFO, a lock,
        # a subclass's or a filter's code could block it, and with it every connection and status request.
        self.inline = bool(self.handlers) and all(
            getattr(h, "writes_without_waiting", False) is True and not h.filters for h in self.handlers
        )
        # Batches handed to the writer (counted by the loop thread) and written by it (counted by the writer): while
        # they differ, one is queued, held back from a full group or being written, and a batch the loop committed
        # itself could overtake it (the earlier one would then look like a duplicate: acked, never written).
        self._handed = 0
        self._written = 0
        self.roll_back_unfinished_batch()

    def roll_back_unfinished_batch(self) -> None:
        """A hub killed while writing a batch left part or all of it unrecorded: cut its files back to before it.

        The client never got the ack, so it sends the batch again and it is written whole, once (see ``_dedup``).
        """
        marks = self.dedup.dangling
        if not marks:
            return
        cut, failed = roll_back(marks)
        if failed:
            self.count("rollbacks_failed")
            log.warning(
                "flocklog hub: cannot take back the batch a crash interrupted in %s (rotated, replaced or "
                "unwritable since): its records may appear twice",
                ", ".join(failed),
            )
        else:
            self.count("batches_rolled_back")
        if cut:
            log.warning("flocklog hub: cut %s back to before the batch a crash interrupted", ", ".join(cut))
            for handler in self.files:
                if handler.baseFilename in cut:  # type: ignore[attr-defined]  # checked in _files
                    with contextlib.suppress(Exception):
                        reopen_handler(handler)  # its idea of the file's size is stale
        self.dedup.settle()

    def run(self) -> None:
        """The writer thread's body: batches (those waiting together as one group) and reopen requests until STOP."""
        item: Any = None
        while True:
            if item is None:
                item = self.queue.get()
            if item is STOP:
                return
            try:
                if item is REOPEN:
                    item = None
                    with self.commit_lock:
                        self._reopen_handlers()
                    continue
                group, item = self._take_group(item)
                try:
                    with self.commit_lock:  # the accounting too: a commit by the loop sets it meanwhile
                        try:
                            self._write_group(group)
                        finally:
                            self.loop.accounting.release(sum(cost for _, _, cost in group))
                            self._written += len(group)
                finally:
                    self.loop.wake()  # one wake-up for every reply posted and the memory released
            except Exception:  # the writer never dies: one bad batch is counted, the next one is written
                self.count("writer_errors")
                log.exception("flocklog hub: error while writing a batch (the hub goes on)")

    def submit(self, conn: Conn, frame: Any, cost: int) -> None:
        """From the loop thread: a batch frame, committed here and now (:meth:`commit_now`) or queued for the writer."""
        if not self.commit_now(conn, frame, cost):
            self._handed += 1
            self.queue.put((conn, frame, cost))

    def commit_now(self, conn: Conn, frame: Any, cost: int) -> bool:
        """From the loop thread: write a small batch here and now if the writer is idle; False: queue it.

        Handing a batch to the writer thread and its ack back to the loop cost three thread wake-ups per batch (the
        loop's, the writer's, the loop's again) and the GIL hand-offs around them; on a machine whose CPUs are busy
        with the application that cost more than the batch's own work (perf: ~14 % of the hub's CPU in the
        scheduler alone). Committed here, the ack goes out in the same round of the loop. Only while every batch
        handed to the writer is written (a batch never overtakes one queued, held back from a full group or being
        written before it), the writer is not writing (``commit_lock``), the batch is small (the loop's other
        connections wait while it is written) and every handler writes plainly (see ``inline``); everything else
        goes to the writer as before.
        """
        if not self.inline or cost > INLINE_MAX_COST or self._handed != self._written or not self.queue.empty():
            return False
        if not self.commit_lock.acquire(blocking=False):
            return False
        try:
            self._write_group([(conn, frame, cost)])
        except Exception:  # as in the writer thread: counted, and the loop goes on
            self.count("writer_errors")
            log.exception("flocklog hub: error while writing a batch (the hub goes on)")
        finally:
            self.loop.accounting.release(cost)
            self.commit_lock.release()
        return True

    def _take_group(self, first: tuple[Conn, Any, int]) -> tuple[list[tuple[Conn, Any, int]], Any]:
        """``first`` and the batches queued behind it, together at most one frame's worth: a group commit.

        Under uvicorn's load (~10 records a batch) the hub's cost was per batch, not per record: a journal begin
        and done, a write per file, a wake-up of the loop and the GIL hand-offs around each. Batches that wait
        together share them. The bound keeps what the group decodes within the writer's reserve (see
        :func:`writer_reserve`). Returns the group and the item after it (a batch that did not fit, a reopen or
        stop request), or None.
        """
        group = [first]
        size = first[2]
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return group, None
            if not isinstance(item, tuple) or size + item[2] > self.loop.max_frame:
                return group, item
            group.append(item)
            size += item[2]

    def _reopen_handlers(self) -> None:
        for handler in self.handlers:
            try:
                reopen_handler(handler)
            except Exception:
                self.count("handler_errors")
                log.exception("flocklog hub: cannot reopen %r", handler)

    def _parse(self, conn: Conn, frame: Any) -> _Batch | None:
        """The batch in ``frame``; None (its error posted, the connection to be closed) if it is malformed."""
        try:
            obj = frame if isinstance(frame, dict) else frames.unpack(frame)
            if not isinstance(obj, dict) or obj.get("t") != "b":
                raise FrameError("frame body is not a batch map")
            cid, seq, recs, stats = obj.get("cid"), obj.get("seq"), obj.get("recs"), obj.get("st", [0, 0])
            if not isinstance(cid, str) or not 0 < len(cid) <= 64:
                raise FrameError("batch 'cid' must be a short string")
            if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
                raise FrameError("batch 'seq' must be a non-negative integer")
            if not isinstance(recs, list):
                raise FrameError("batch 'recs' must be a list")
            if not (isinstance(stats, list) and len(stats) == 2 and all(type(v) is int for v in stats)):
                raise FrameError("batch 'st' must be [spooled, dropped]")
        except FrameError as exc:
            self.count("malformed")
            self.loop.post(conn, {"t": "error", "kind": "malformed", "reason": str(exc)}, close=True, wake=False)
            return None
        return _Batch(conn, cid, seq, recs, stats)

    def _write_group(self, group: list[tuple[Conn, Any, int]]) -> None:
        """Write the new batches of ``group`` once, journaled as one (begin, records, done), then post every reply."""
        batches = [batch for conn, frame, _ in group if (batch := self._parse(conn, frame)) is not None]
        # What the decoded group costs (its records' bytes objects and a chunk of LogRecords) counts against the
        # hub's memory bound until it is done; the frames themselves are in the backlog already, and are let go
        # now that they are decoded (their costs stay in the group until the caller releases them).
        size = sum(len(frame) for _, frame, _ in group if isinstance(frame, bytes))
        group[:] = [(conn, None, cost) for conn, _, cost in group]
        received = sum(len(batch.recs) for batch in batches)
        self.loop.accounting.decoding(decoded_cost(size, received, _WRITE_CHUNK))
        new: list[_Batch] = []
        latest: dict[str, int] = {}  # a resend on a new connection may sit in the group beside its first send
        duplicates = 0
        for batch in batches:
            if batch.seq <= latest.get(batch.cid, self.dedup.last(batch.cid)):
                duplicates += 1
                self._check_records(batch)  # a resend is checked as strictly as the first send
            else:
                new.append(batch)
                latest[batch.cid] = batch.seq
        self.add_counts({"batches": len(batches), "records_received": received, "duplicate_batches": duplicates})
        if new:
            written = [(batch.cid, batch.seq) for batch in new]
            if self.files and self.dedup.path is not None:
                self.dedup.begin(written, file_marks(self.files))
            self._write_records(new)
            if self.crash is not None:
                self.crash.check("after_write")
            self.dedup.record(written)  # after the write, before the acks: a resend after a crash is skipped
            if self.crash is not None:
                self.crash.check("after_watermark")
        for batch in batches:
            self.client_stats[batch.cid] = (batch.stats[0], batch.stats[1])
            if len(self.client_stats) > MAX_TRACKED_CLIENTS:
                self.client_stats.pop(next(iter(self.client_stats)))
            if batch.bad:
                self.count("malformed")
                reason = f"{batch.bad} of {len(batch.recs)} records malformed and skipped: {batch.first_error}"
                self.loop.post(
                    batch.conn, {"t": "error", "kind": "malformed", "reason": reason}, close=True, wake=False
                )
            else:
                self.loop.post(batch.conn, {"t": "ack", "seq": batch.seq}, wake=False)

    @staticmethod
    def _check_records(batch: _Batch) -> None:
        for raw in batch.recs:
            try:
                frames.decode_record(raw)
            except FrameError as exc:
                batch.malformed(exc)

    def _write_records(self, batches: list[_Batch]) -> None:
        """Decode, repair and write the records of ``batches`` a chunk at a time (a chunk may span batches); each
        batch counts its malformed records (skipped)."""
        repaired, skipped, written = 0, 0, 0
        now = time.time()
        chunk: list[logging.LogRecord] = []
        for batch in batches:
            recs = batch.recs
            start = 0
            while start < len(recs):
                part = recs[start : start + _WRITE_CHUNK - len(chunk)]
                start += len(part)
                try:  # nearly always: every record plain, decoded with no Python loop of our own
                    plain = list(map(frames.read_plain, part))
                except Exception:
                    plain = [None]
                if None not in plain:
                    chunk += plain  # type: ignore[arg-type]  # no None in it, checked just above
                else:
                    for raw in part:
                        try:
                            record, fixed = frames.read_record(raw, now)
                        except FrameError as exc:
                            batch.malformed(exc)
                            continue
                        except Exception:  # a record no repair could save: skipped and counted, never the whole hub
                            skipped += 1
                            continue
                        repaired += fixed
                        chunk.append(record)
                if len(chunk) >= _WRITE_CHUNK:
                    self._emit(chunk)
                    written += len(chunk)
                    chunk = []
        self._emit(chunk)
        written += len(chunk)
        bad = sum(batch.bad for batch in batches)
        self.add_counts({"records_written": written, "records_repaired": repaired, "records_skipped": skipped + bad})
        if repaired:
            log.warning(
                "flocklog hub: repaired %d records with an unusable 'created' time (receipt time used)", repaired
            )

    def _emit(self, records: list[logging.LogRecord]) -> None:
        """Hand records to every handler: flocklog's file handlers take a whole chunk in one write."""
        if not records:
            return
        if self.crash is not None and self.crash.due("mid_write"):
            _crashpoints.write_half_and_die(self.handlers, records)
        for handler in self.handlers:
            level = handler.level
            batch_emit = getattr(handler, "emit_batch", None)
            if callable(batch_emit):
                try:
                    if level <= 0 and not handler.filters:  # the usual hub handler: no per-record pass at all
                        batch_emit(records)
                    else:
                        batch_emit([r for r in records if r.levelno >= level and handler.filter(r)])
                    continue
                except Exception:  # a filter that raises: fall back to one record at a time, counted there
                    pass
            for record in records:
                if record.levelno < level:
                    continue
                try:
                    handler.handle(record)
                except Exception:  # a filter that raises; emit() errors go to handleError already
                    self.count("handler_errors")


class _Batch:
    """One batch frame as the writer checked it, and the malformed records found in it."""

    __slots__ = ("bad", "cid", "conn", "first_error", "recs", "seq", "stats")

    def __init__(self, conn: Conn, cid: str, seq: int, recs: list[Any], stats: list[int]) -> None:
        self.conn = conn
        self.cid = cid
        self.seq = seq
        self.recs = recs
        self.stats = stats
        self.bad = 0
        self.first_error = ""

    def malformed(self, exc: FrameError) -> None:
        self.bad += 1
        self.first_error = self.first_error or str(exc)
