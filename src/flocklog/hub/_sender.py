"""The sender thread of a :class:`~flocklog.hub.client.HubHandler`: batches, sends, waits for acks, spools.

Each cycle takes what the buffer holds (after ``linger``, or at once when a batch is full or a close is under
way), cuts it to the hub's advertised frame limit, sends it on the current session and waits for the ack; a
batch the hub does not take goes to the spool, which is replayed first once the hub is back. This class is the
handler's base, so the two share one object; the handler (:mod:`.client`) builds the fields below.

| field                                        | owner thread                              | lock                 |
|----------------------------------------------|-------------------------------------------|----------------------|
| ``_session``, ``_seq``, ``_batch_limit``, ``_last_batch`` | the sender                   | none                 |
| ``_closing``, ``_close_quota``, ``_deadline`` | close() sets, the sender reads           | ``_mutex`` (set)     |
| ``_connector``, ``_spool``                   | the sender (their own locks inside)       | theirs               |
| ``_stats``                                   | the sender's counters (emit has its own)  | ``_mutex`` for emit's|
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from pathlib import Path

from flocklog.errors import FrameError, HubError
from flocklog.hub import frames
from flocklog.hub._address import Address
from flocklog.hub._buffer import RecordBuffer
from flocklog.hub._connector import Connector
from flocklog.hub._session import ClientSession, Rejected
from flocklog.hub._spool import Spool

__all__ = ["HubSender"]

_ENVELOPE_ROOM = 1024  # batch map keys, client id, seq, stats and the MAC around the records
_CONNECT_POLL = 0.01


class HubSender:
    """The delivery half of a HubHandler (its base class); the fields below are set by the handler."""

    address: Address
    spool_dir: Path
    capacity: int
    when_full: str
    batch_size: int
    connect_timeout: float
    retry_interval: float
    linger: float
    adopt_orphans: bool
    _cid: str
    _seq: int
    _buffer: RecordBuffer
    _mutex: threading.Lock
    _wake: threading.Event
    _idle: threading.Condition
    _thread: threading.Thread | None
    _session: ClientSession | None
    _last_batch: float
    _closing: bool
    _close_quota: int
    _closed: bool
    _deadline: float
    _spool: Spool
    _batch_limit: int
    _record_limit: int
    _connector: Connector
    _stats: dict[str, int]
    _warned: set[str]

    def _start_sender(self) -> None:
        self._thread = threading.Thread(target=self._run, name="flocklog-hub-sender", daemon=True)
        self._thread.start()

    # -- the sender thread -----------------------------------------------------------------------------------
    def _take_batch(self) -> list[bytes]:
        return self._buffer.take_batch(self.batch_size, self._batch_limit)

    def _batch_done(self) -> None:
        self._buffer.batch_done(notify=self.when_full == "block")

    def _run(self) -> None:
        """The sender thread: it never dies of an error (counted, said once, then it goes on)."""
        if self.adopt_orphans:
            try:
                self._stats["adopted_spools"] += self._spool.adopt_orphans()
            except Exception as exc:
                self._sender_error(exc)
        while True:
            try:
                if self._cycle():
                    return
            except Exception as exc:  # never the end of this process's logging
                self._sender_error(exc)
                if self._closing:
                    self._finish_sender()
                    return
                time.sleep(min(self.retry_interval, 0.5))

    def _sender_error(self, exc: BaseException) -> None:
        self._stats["sender_errors"] += 1
        self._warn_once("sender", f"flocklog HubHandler: sender error ({type(exc).__name__}: {exc}); it goes on")

    def _cycle(self) -> bool:
        """One wake-up of the sender; True when a close() is complete."""
        self._wake.wait(self.retry_interval)
        self._linger()
        self._wake.clear()
        while True:
            if self._spool.pending and not self._past_deadline():
                self._try_replay()
            if self._closing and self._close_quota <= 0:
                break  # what was buffered when close() began is out; close() spools anything newer
            batch = self._take_batch()
            if not batch:
                break
            try:
                self._deliver(batch)
            finally:
                if self._closing:
                    self._close_quota -= len(batch)
                self._batch_done()
        with self._idle:
            self._idle.notify_all()
        if (
            self._closing
            and (self._close_quota <= 0 or (not self._buffer.buf and not self._buffer.carry))
            and (not self._spool.pending or self._past_deadline())
        ):
            self._finish_sender()
            return True
        return False

    def _finish_sender(self) -> None:
        self._close_session()
        self._connector.close()
        self._spool.close()

    def _linger(self) -> None:
        """Let a trickle pile up for ``linger`` after the last batch, unless a full batch is already waiting.

        The sender is a thread of the application: each time it wakes, sends and waits for an ack, the emitting
        threads wait for the GIL. One batch per few milliseconds instead of one per handful of records keeps
        those hand-offs rare. While it sleeps the wake event stays set, so emit() does not signal it again.
        """
        if self._closing or self.linger <= 0:
            return
        pause = self._last_batch + self.linger - time.monotonic()
        if pause > 0 and self._buffer.waiting() < self.batch_size:
            time.sleep(pause)

    def _past_deadline(self) -> bool:
        return time.monotonic() >= self._deadline

    def _new_batch_body(self, recs: list[bytes]) -> tuple[int, bytes]:
        seq = self._seq
        self._seq += 1
        st = self._stats
        return seq, frames.pack(
            {"t": "b", "cid": self._cid, "seq": seq, "recs": recs, "st": [st["spooled"], st["dropped_full"]]}
        )

    def _deliver(self, recs: list[bytes]) -> None:
        self._last_batch = time.monotonic()
        seq, body = self._new_batch_body(recs)
        self._stats["batches"] += 1
        if not self._spool.pending and self._ensure_session(wait=True):
            outcome = self._send_body(body, seq, len(recs))
            if outcome == "ok":
                self._stats["sent"] += len(recs)
            if outcome != "failed":
                return
        self._spool_bodies([body], len(recs))

    # -- connecting (the connector thread waits for greetings, never the sender) -----------------------------
    def _ensure_session(self, *, wait: bool = False) -> bool:
        """A session if one is ready; else start connecting and, with ``wait``, wait for it only while it is safe.

        Safe means: the buffer is below half its capacity. A hub that accepts and never greets (or a slow one)
        then makes this spool instead of letting the buffer overflow and drop.
        """
        if self._session is not None:
            return True
        self._take_ready()
        if self._session is not None:
            return True
        now = time.monotonic()
        connector = self._connector
        if not self._past_deadline():
            connector.start(self._deadline)
        if wait and connector.busy:
            limit = min(now + self.connect_timeout, self._deadline)
            half = self.capacity // 2
            while time.monotonic() < limit and self._buffer.waiting() < half:
                if connector.connected.wait(_CONNECT_POLL):
                    break
            self._take_ready()
        return self._session is not None

    def _take_ready(self) -> None:
        session = self._connector.take()
        if session is None:
            return
        self._session = session
        self._batch_limit = max(1024, min(self._record_limit, session.max_frame - _ENVELOPE_ROOM))
        self._stats["reconnects"] += 1
        self._warned.discard("connect")

    def _spool_dir(self) -> Path:
        return self._spool.known_dir()

    def _send_body(self, body: bytes, seq: int | None, nrecs: int) -> str:
        """Send one batch and wait for its ack: "ok", "rejected" (dropped, counted) or "failed" (spool/resend it).

        A batch the hub calls malformed would be rejected again on every resend, so it is dropped with a counter
        and a warning instead of blocking everything behind it forever. The caller passes ``seq`` and ``nrecs``,
        which it knows: decoding the whole body again here held the GIL for no reason. A body larger than the
        hub's frame limit (spooled before this hub was known) is sent in parts that fit.
        """
        session = self._session
        if session is None:
            return "failed"
        if frames.HEADER.size + len(body) + frames.MAC_SIZE > session.max_frame:
            return self._send_split(body, nrecs)
        try:
            if self._deadline != float("inf"):
                session.sock.settimeout(max(0.05, min(self.connect_timeout, self._deadline - time.monotonic())))
            session.sendall(session.seal(body))
            reply = session.receive()
            if reply.get("t") != "ack" or reply.get("seq") != seq:
                raise FrameError(f"unexpected reply {reply.get('t')!r} to batch {seq}")
            return "ok"
        except Rejected as exc:
            self._stats["dropped_rejected"] += nrecs
            self._warn_once("rejected", f"flocklog HubHandler: the hub rejected {nrecs} records: {exc}")
            self._close_session()
            return "rejected"
        except (OSError, ConnectionError, HubError) as exc:
            self._warn_once("send", f"flocklog HubHandler: lost the hub ({exc}); spooling to {self._spool_dir()}")
            self._close_session()
            self._connector.retry_after(min(0.05, self.retry_interval))
            return "failed"

    def _send_split(self, body: bytes, nrecs: int) -> str:
        """Send a batch too big for this hub as parts within its limit; an oversized record is truncated.

        Each part is its own batch ``(cid.seq.part, 0)``, so a resend after a failure skips the parts the hub
        already wrote, exactly as for whole batches.
        """
        try:
            batch = frames.unpack(body)
            cid, seq, recs, stats = batch["cid"], batch["seq"], list(batch["recs"]), batch.get("st", [0, 0])
        except (FrameError, KeyError, TypeError):
            self._stats["dropped_rejected"] += nrecs
            self._warn_once("rejected", "flocklog HubHandler: an undecodable spooled batch was dropped")
            return "rejected"
        limit = self._batch_limit
        for i, rec in enumerate(recs):
            if isinstance(rec, bytes) and len(rec) + 8 > limit:
                try:
                    fields = frames.decode_record(rec)
                except FrameError:
                    continue  # the hub will call it malformed and count it
                recs[i], _ = frames.encode_record(fields, limit - 8)
                self._stats["truncated"] += 1
        parts: list[list[bytes]] = [[]]
        size = 0
        for rec in recs:
            cost = len(rec) + 8
            if parts[-1] and size + cost > limit:
                parts.append([])
                size = 0
            parts[-1].append(rec)
            size += cost
        self._stats["split_batches"] += 1
        for k, part in enumerate(parts):
            part_body = frames.pack({"t": "b", "cid": f"{cid}.{seq}.{k}"[:64], "seq": 0, "recs": part, "st": stats})
            outcome = self._send_body(part_body, 0, len(part))
            if outcome == "failed":
                return "failed"
        return "ok"

    def _close_session(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    # -- the spool -------------------------------------------------------------------------------------------
    def _spool_bodies(self, bodies: list[bytes], nrecs: int) -> None:
        try:
            self._spool.append(bodies)
            self._stats["spooled"] += nrecs
        except OSError as exc:  # a full disk: counted; the spool keeps only whole frames; later ones may fit
            self._stats["dropped_spool_error"] += nrecs
            self._warn_once("spool", f"flocklog HubHandler: cannot spool {nrecs} records to {self._spool_dir()}: {exc}")

    def _spool_batches(self, batches: list[list[bytes]]) -> None:
        for recs in batches:
            self._spool_bodies([self._new_batch_body(recs)[1]], len(recs))

    def _close_spool(self) -> None:
        self._spool.close()

    def _try_replay(self) -> None:
        """Replay spool files in order, one acked batch at a time; stop at the first failure (resume there)."""
        if not self._ensure_session(wait=True):
            return
        _, replayed = self._spool.replay(self._send_body)
        self._stats["replayed"] += replayed

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            with contextlib.suppress(Exception):
                sys.stderr.write(message + "\n")
