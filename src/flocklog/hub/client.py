"""HubHandler: a logging handler that ships formatted records to a hub, spooling to disk while the hub is away.

``emit()`` only formats, encodes and appends to a bounded buffer; a background sender thread batches, sends, waits
for the hub's ack and, when the hub cannot be reached, appends the batch to a local spool file that is replayed in
order (before anything newer) once the hub is back. Batches carry ``(client id, seq)`` so a resent batch that the
hub already wrote is skipped there. After ``fork`` the child starts empty with a new client id and its own thread.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import itertools
import logging
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO

from flocklog import _lifecycle
from flocklog._proc import pid_alive
from flocklog.errors import ConfigError, FrameError, HubError
from flocklog.hub import frames
from flocklog.hub._address import resolve_address, resolve_secret
from flocklog.hub._session import ClientSession, Rejected

ENV_SPOOL_DIR = "FLOCKLOG_HUB_SPOOL_DIR"
_POLICIES = ("drop_oldest", "drop_newest", "block")
_ENVELOPE_ROOM = 1024  # batch map keys, client id, seq, stats and the MAC around the records
_FSYNC_INTERVAL = 1.0


def default_spool_dir() -> str:
    return os.environ.get(ENV_SPOOL_DIR) or os.path.join(tempfile.gettempdir(), f"flocklog-spool-{os.getuid()}")


def _seq_and_count(body: bytes) -> tuple[int | None, int]:
    """A spooled batch's sequence number and record count (None, 0 if it cannot be decoded: the hub rejects it)."""
    try:
        batch = frames.unpack(body)
        return batch["seq"], len(batch["recs"])
    except (FrameError, KeyError, TypeError):
        return None, 0


class HubHandler(logging.Handler):
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
        super().__init__(level)
        if when_full not in _POLICIES:
            raise ConfigError(f"when_full={when_full!r}: use one of {', '.join(_POLICIES)}")
        if capacity < 1 or batch_size < 1:
            raise ConfigError("capacity and batch_size must be >= 1")
        if not 0 <= linger < retry_interval:
            raise ConfigError(f"linger must be >= 0 and below retry_interval, got {linger}")
        if max_frame < 4 * _ENVELOPE_ROOM:
            raise ConfigError(f"max_frame must be at least {4 * _ENVELOPE_ROOM} bytes")
        self.address = resolve_address(address)
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

    # -- state that a forked child must not share ------------------------------------------------------------
    def _reset_state(self) -> None:
        self._pid = os.getpid()
        self._cid = uuid.uuid4().hex
        self._seq = 0
        self._mutex = threading.Lock()
        self._space = threading.Condition(self._mutex)
        self._wake = threading.Event()
        self._idle = threading.Condition(threading.Lock())
        self._buf: collections.deque[bytes] = collections.deque()  # emit() appends here (under _mutex)
        # The sender's share, taken from _buf whole; records before _carry_pos have been sent. A list, so that a
        # batch is cut by slicing in C rather than a Python loop (see _take_batch).
        self._carry: list[bytes] = []
        self._carry_pos = 0
        self._carry_len = 0
        self._inflight = 0
        self._thread: threading.Thread | None = None
        self._session: ClientSession | None = None
        self._next_connect = 0.0
        self._last_batch = -1e9
        self._closing = False
        self._close_quota = 0  # records a close() in progress still waits for the sender to send
        self._closed = False
        self._deadline = float("inf")
        self._spool_path = self.spool_dir / f"{self._pid}-{self._cid}.spool"
        self._spool_file: BinaryIO | None = None
        self._last_fsync = 0.0
        self._pending_spools: list[Path] = []  # replay order: adopted orphans first, then our own spool
        self._replay_file: BinaryIO | None = None
        self._replay_path: Path | None = None
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
                "connect_failures",
                "adopted_spools",
            ),
            0,
        )
        self._warned: set[str] = set()

    def _after_fork_in_child(self) -> None:
        """The child owns nothing of the parent's: not its buffer (the parent sends it), socket, thread or spool."""
        if self._session is not None:
            with contextlib.suppress(OSError):
                self._session.sock.close()
        for f in (self._spool_file, self._replay_file):
            if f is not None:
                with contextlib.suppress(OSError):
                    os.close(f.fileno())
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
        with self._mutex:
            if self._closed:
                self._warn_once("closed", "flocklog HubHandler: record emitted after close() was spooled")
                self._spool_batches([[data]])
                return
            st = self._stats
            st["emitted"] += 1
            if truncated:
                st["truncated"] += 1
            if len(self._buf) + self._carry_len + self._inflight >= self.capacity:
                if self.when_full == "drop_newest":
                    st["dropped_full"] += 1
                    return
                if self.when_full == "drop_oldest":
                    if self._buf:  # when the sender owns all of them they are on their way: keep this one
                        self._buf.popleft()
                        st["dropped_full"] += 1
                else:
                    while len(self._buf) + self._carry_len + self._inflight >= self.capacity and not self._closing:
                        self._wake.set()
                        self._space.wait(0.1)
            self._buf.append(data)
            if self._thread is None and not self._closing:  # during close(), its own tail spools what is left
                self._start_sender()
        if not self._wake.is_set():
            self._wake.set()

    def _start_sender(self) -> None:
        self._thread = threading.Thread(target=self._run, name="flocklog-hub-sender", daemon=True)
        self._thread.start()

    # -- the sender thread -----------------------------------------------------------------------------------
    def _take_batch(self) -> list[bytes]:
        """Next batch: at most ``batch_size`` records whose frame fits the size limit.

        The shared buffer is swapped out whole, so emit() never waits for a per-record loop, and the batch is cut
        with slices, ``accumulate`` and ``bisect``, all in C. Every microsecond the sender spends in Python is one
        the emitting threads may wait for the GIL: a per-record loop over a 512-record batch cost about 50 µs.
        """
        if self._carry_pos >= len(self._carry):
            with self._mutex:  # in one step: drain() must never see these records in neither place
                self._carry, self._carry_pos = list(self._buf), 0
                self._carry_len = len(self._carry)
                self._buf = collections.deque()
        carry, start = self._carry, self._carry_pos
        chunk = carry[start : start + self.batch_size]
        # A record costs its bytes plus 8 of framing; keep the longest prefix whose total is within the limit.
        ends = list(itertools.accumulate(map(len, chunk)))
        count = len(chunk)
        if count and ends[-1] + 8 * count > self._record_limit:
            limit = self._record_limit
            count = bisect.bisect_right(range(count), limit, key=lambda k: ends[k] + 8 * (k + 1))
            count = max(count, 1)  # one record of exactly the limit goes alone
            chunk = chunk[:count]
        self._inflight = count  # before the carry shrinks: drain() must never see the batch in neither place
        self._carry_pos = start + count
        if self._carry_pos >= len(carry):
            self._carry, self._carry_pos = [], 0
        self._carry_len = len(self._carry) - self._carry_pos
        return chunk

    def _batch_done(self) -> None:
        with self._mutex:
            self._inflight = 0
            if self.when_full == "block":
                self._space.notify_all()

    def _run(self) -> None:
        if self.adopt_orphans:
            self._adopt_orphan_spools()
        while True:
            self._wake.wait(self.retry_interval)
            self._linger()
            self._wake.clear()
            while True:
                if self._pending_spools and not self._past_deadline():
                    self._try_replay()
                if self._closing and self._close_quota <= 0:
                    break  # what was buffered when close() began is out; close() spools anything newer
                batch = self._take_batch()
                if not batch:
                    break
                self._deliver(batch)
                if self._closing:
                    self._close_quota -= len(batch)
                self._batch_done()
            with self._idle:
                self._idle.notify_all()
            if (
                self._closing
                and (self._close_quota <= 0 or (not self._buf and not self._carry))
                and (not self._pending_spools or self._past_deadline())
            ):
                self._close_session()
                self._close_spool()
                return

    def _linger(self) -> None:
        """Let a trickle pile up for ``linger`` after the last batch, unless a full batch is already waiting.

        The sender is a thread of the application: each time it wakes, sends and waits for an ack, the emitting
        threads wait for the GIL. One batch per few milliseconds instead of one per handful of records keeps
        those hand-offs rare. While it sleeps the wake event stays set, so emit() does not signal it again.
        """
        if self._closing or self.linger <= 0:
            return
        pause = self._last_batch + self.linger - time.monotonic()
        if pause > 0 and len(self._buf) + self._carry_len < self.batch_size:
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
        if not self._pending_spools and self._ensure_session():
            outcome = self._send_body(body, seq, len(recs))
            if outcome == "ok":
                self._stats["sent"] += len(recs)
            if outcome != "failed":
                return
        self._spool_bodies([body], len(recs))

    def _ensure_session(self) -> bool:
        if self._session is not None:
            return True
        now = time.monotonic()
        if now < self._next_connect or self._past_deadline():
            return False
        timeout = min(self.connect_timeout, max(0.05, self._deadline - now))
        try:
            self._session = ClientSession(self.address, self.secret, timeout)
        except (HubError, FrameError, OSError) as exc:
            self._stats["connect_failures"] += 1
            self._next_connect = now + self.retry_interval
            self._warn_once("connect", f"flocklog HubHandler: hub unreachable, spooling to {self.spool_dir}: {exc}")
            return False
        self._stats["reconnects"] += 1
        self._warned.discard("connect")
        return True

    def _send_body(self, body: bytes, seq: int | None, nrecs: int) -> str:
        """Send one batch and wait for its ack: "ok", "rejected" (dropped, counted) or "failed" (spool/resend it).

        A batch the hub calls malformed would be rejected again on every resend, so it is dropped with a counter
        and a warning instead of blocking everything behind it forever. The caller passes ``seq`` and ``nrecs``,
        which it knows: decoding the whole body again here held the GIL for no reason.
        """
        session = self._session
        if session is None:
            return "failed"
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
            self._warn_once("send", f"flocklog HubHandler: lost the hub ({exc}); spooling to {self.spool_dir}")
            self._close_session()
            self._next_connect = time.monotonic() + min(0.05, self.retry_interval)
            return "failed"

    def _close_session(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    # -- the spool -------------------------------------------------------------------------------------------
    def _spool_bodies(self, bodies: list[bytes], nrecs: int) -> None:
        try:
            if self._spool_file is None:
                self.spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._spool_file = open(self._spool_path, "ab")  # noqa: SIM115 - kept open across batches
            for body in bodies:
                self._spool_file.write(frames.HEADER.pack(len(body)) + body)
            self._spool_file.flush()
            now = time.monotonic()
            if now - self._last_fsync >= _FSYNC_INTERVAL:
                os.fsync(self._spool_file.fileno())
                self._last_fsync = now
            if self._spool_path not in self._pending_spools:
                self._pending_spools.append(self._spool_path)
            self._stats["spooled"] += nrecs
        except OSError as exc:
            self._stats["dropped_spool_error"] += nrecs
            self._warn_once("spool", f"flocklog HubHandler: cannot spool {nrecs} records to {self.spool_dir}: {exc}")

    def _spool_batches(self, batches: list[list[bytes]]) -> None:
        for recs in batches:
            self._spool_bodies([self._new_batch_body(recs)[1]], len(recs))

    def _close_spool(self) -> None:
        if self._spool_file is not None:
            with contextlib.suppress(OSError):
                self._spool_file.flush()
                os.fsync(self._spool_file.fileno())
                self._spool_file.close()
            self._spool_file = None
        if self._replay_file is not None:
            with contextlib.suppress(OSError):
                self._replay_file.close()
            self._replay_file = None

    def _try_replay(self) -> None:
        """Replay spool files in order, one acked batch at a time; stop at the first failure (resume there)."""
        while self._pending_spools:
            if not self._ensure_session():
                return
            path = self._pending_spools[0]
            if self._replay_file is None or self._replay_path != path:
                try:
                    self._replay_file = open(path, "rb")  # noqa: SIM115 - position kept between attempts
                except FileNotFoundError:
                    self._pending_spools.pop(0)
                    continue
                self._replay_path = path
            f = self._replay_file
            while True:
                pos = f.tell()
                header = f.read(frames.HEADER.size)
                body = f.read(frames.HEADER.unpack(header)[0]) if len(header) == frames.HEADER.size else b""
                if not body:
                    break
                seq, nrecs = _seq_and_count(body)
                outcome = self._send_body(body, seq, nrecs)
                if outcome == "failed":
                    f.seek(pos)
                    return
                if outcome == "ok":
                    self._stats["replayed"] += nrecs
            # the file is fully replayed; ours may still be open for appending: close it so new spooling starts
            # a fresh file
            if path == self._spool_path and self._spool_file is not None:
                self._spool_file.close()
                self._spool_file = None
            f.close()
            self._replay_file = None
            self._replay_path = None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self._pending_spools.pop(0)

    def _adopt_orphan_spools(self) -> None:
        """Claim spool files of dead processes (by renaming them to our pid) so they are replayed, oldest first."""
        try:
            candidates = sorted(self.spool_dir.glob("*.spool"), key=lambda p: p.stat().st_mtime)
        except OSError:
            return
        for path in candidates:
            owner = path.name.split("-", 1)[0]
            if not owner.isdigit() or int(owner) == self._pid or pid_alive(int(owner)):
                continue
            claimed = path.with_name(f"{self._pid}-adopted-{path.name}")
            try:
                os.rename(path, claimed)
            except OSError:
                continue  # another process adopted it first
            self._pending_spools.append(claimed)
            self._stats["adopted_spools"] += 1

    # -- lifecycle -------------------------------------------------------------------------------------------
    def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything emitted so far was acked by the hub or spooled; True if that happened in time."""
        deadline = time.monotonic() + (self.drain_timeout if timeout is None else timeout)
        while True:
            with self._mutex:
                idle = not self._buf and not self._carry and not self._inflight and not self._pending_spools
            if idle:
                return True
            if time.monotonic() >= deadline or self._thread is None or not self._thread.is_alive():
                return False
            self._wake.set()
            with self._idle:
                self._idle.wait(0.05)

    def flush(self) -> None:
        self._wake.set()

    def _drain_at_sigterm(self) -> None:
        self.drain()

    def stats(self) -> dict[str, Any]:
        """Counters: emitted, sent, spooled, replayed, dropped_full, dropped_oversize, truncated, ..."""
        with self._mutex:
            data: dict[str, Any] = dict(self._stats)
            data["buffered"] = len(self._buf) + self._carry_len + self._inflight
        data["connected"] = self._session is not None
        data["pending_spools"] = len(self._pending_spools)
        data["client_id"] = self._cid
        data["pid"] = self._pid
        return data

    def close(self) -> None:
        """Drain within ``drain_timeout``; whatever is still unsent then goes to the spool file, never lost."""
        if self._pid != os.getpid() or self._closed:
            super().close()
            return
        thread = self._thread
        with self._mutex:
            # The sender drains what is buffered now, not what other threads go on logging: under a steady stream
            # "until the buffer is empty" never came, and close() waited out its timeout (6 s, measured).
            self._close_quota = len(self._buf) + self._carry_len + self._inflight
            self._closing = True
            self._deadline = time.monotonic() + self.drain_timeout
            self._space.notify_all()
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.drain_timeout + self.connect_timeout + 1.0)
        # Under the mutex to the end: a record emitted meanwhile waits, then spools to a file this has finished
        # with, rather than writing to one this is closing.
        with self._mutex:
            self._closed = True
            leftovers = list(self._buf)
            self._buf.clear()
            stopped = thread is None or not thread.is_alive()
            if stopped:
                leftovers[:0] = self._carry[self._carry_pos :]  # the sender is gone: its share is ours, and older
                self._carry, self._carry_pos = [], 0
                if leftovers:
                    self._deadline = 0.0
                    self._spool_batches(
                        [leftovers[i : i + self.batch_size] for i in range(0, len(leftovers), self.batch_size)]
                    )
                self._close_spool()
                self._close_session()
        if not stopped and leftovers:  # the sender is stuck in a send (bounded by its socket timeout): not its files
            self._warn_once("stuck", f"flocklog HubHandler: sender stuck at close; {len(leftovers)} records lost")
            self._stats["dropped_spool_error"] += len(leftovers)
        _lifecycle.unregister(self)
        super().close()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            with contextlib.suppress(Exception):
                sys.stderr.write(message + "\n")

    def __repr__(self) -> str:
        return f"<HubHandler {self.address} ({logging.getLevelName(self.level)})>"
