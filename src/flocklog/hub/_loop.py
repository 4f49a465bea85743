"""The hub's connections: ONE selector thread accepts, reads and checks frames, answers status and sends replies.

Why one thread and no thread per connection: 600 idle peers under a 512-task limit made thread creation fail and
killed the accept loop for good, and a peer that never read its replies blocked the writer on a send. Here every
socket is non-blocking; a reply is appended to its connection's output buffer and sent when the socket can take
it, so no peer can block another; a peer whose unread replies pass a bound is cut off. Reading stops (back-pressure)
while the bytes held for the writer pass the hub's memory bound, and starts again when it has caught up. One
concept over ~480 lines: accepting, reading, checking and replying are steps of the same non-blocking loop over
the same per-connection buffers; split, they would share every field of ``Conn``.

| field                        | owner thread          | lock                                    |
|------------------------------|-----------------------|-----------------------------------------|
| ``Conn.*`` (buffers, counters)| the loop thread      | none                                    |
| ``_conns``, ``_paused``      | the loop thread       | none (``clients()`` reads a length)     |
| ``_posted``                  | writer -> loop        | ``collections.deque`` (atomic appends)  |
| ``Accounting.backlog``       | loop adds, committer subtracts | ``Accounting.lock``            |
"""

from __future__ import annotations

import collections
import contextlib
import hmac
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from flocklog.errors import FrameError
from flocklog.hub import frames

log = logging.getLogger("flocklog.hub")

_READ_CHUNK = 256 * 1024
_MAX_UNREAD_REPLIES = 256 * 1024  # bytes of replies a peer may leave unread before it is cut off
_SMALL_FRAME = 4096  # frames up to this size are decoded here (status requests); larger ones by the writer
_HOUSEKEEPING = 0.25
_SLACK_SHARE = 16  # 1/16 of the memory bound is kept for what the accounting cannot see
_LISTEN, _WAKE = object(), object()


class Conn:
    """One accepted connection; only the loop thread touches its buffers and counters."""

    __slots__ = (
        "closed",
        "closing",
        "events",
        "greeted",
        "inbuf",
        "last_active",
        "nonce",
        "opened",
        "outbuf",
        "peer",
        "received",
        "sent",
        "sock",
    )

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer
        self.nonce = os.urandom(16)
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.sent = 0  # frames sealed towards the client
        self.received = 0  # frames read from the client
        self.greeted = False  # a first valid frame arrived (authenticated, when the hub has a secret)
        self.opened = self.last_active = time.monotonic()
        self.closing = False  # read no more; close once the output buffer is sent
        self.closed = False
        self.events = 0


#: What one decoded record costs the writer beyond its bytes: its ``bytes`` object in the batch's list (~41 bytes
#: and a list slot) while the batch is written, and, for the chunk being written, its LogRecord (~1.2-1.5 KiB with
#: its strings, measured with tracemalloc). A 1 MiB frame of 66-byte records decodes to ~2.3 MB besides its frame.
RECORD_REF_COST = 48
RECORD_OBJECT_COST = 1536
#: The smallest record on the wire (15 fields, empty strings, nil ids) with its framing in a batch, in bytes.
MIN_RECORD_SIZE = 24


def decoded_cost(frame_size: int, records: int, chunk: int) -> int:
    """Bytes a batch costs the writer while it decodes and writes it, beyond its frame (estimated per record)."""
    return frame_size + records * RECORD_REF_COST + min(records, chunk) * RECORD_OBJECT_COST


class Accounting:
    """Bytes the hub holds for its writer: frames queued (added by the loop, released by whoever wrote them) and the
    decoded batch being written (an estimate per record, set by whichever thread holds the writer's commit lock:
    the writer, or the loop committing a small batch itself)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.backlog = 0
        self.decoded = 0

    def add(self, n: int) -> None:
        with self.lock:
            self.backlog += n

    def decoding(self, n: int) -> None:
        self.decoded = n  # one writer; an int store is atomic

    def release(self, n: int) -> None:
        with self.lock:
            self.backlog -= n
            self.decoded = 0


class Loop:
    """Accept, read, reply; hands complete batch frames to ``submit`` (the writer's queue)."""

    def __init__(
        self,
        listeners: list[socket.socket],
        *,
        secret: bytes | None,
        max_frame: int,
        max_memory: int,
        writer_reserve: int,
        max_connections: int,
        idle_timeout: float,
        handshake_timeout: float,
        count: Callable[..., None],
        status: Callable[[], dict[str, Any]],
        submit: Callable[[Conn, Any, int], None],
        accounting: Accounting,
    ) -> None:
        self.secret = secret
        self.max_frame = max_frame
        self.max_memory = max_memory
        self.writer_reserve = writer_reserve
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        self._count = count
        self._status = status
        self._submit = submit
        self.accounting = accounting
        self.listeners = listeners
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        for sock in listeners:
            sock.setblocking(False)
            self._sel.register(sock, selectors.EVENT_READ, _LISTEN)
        self._listening = set(listeners)
        self._accept_retry_at = 0.0
        self._paused_listeners: list[socket.socket] = []
        self._conns: set[Conn] = set()
        self._posted: collections.deque[tuple[Conn, dict[str, Any] | None, bool]] = collections.deque()
        self._paused = False
        self._inbuf_bytes = 0
        self._outbuf_bytes = 0
        self._stop_reading = threading.Event()
        self._finish = threading.Event()
        self._next_housekeeping = 0.0
        # The loop thread's own: every reply is packed with one kept buffer, and every read lands in one kept
        # scratch buffer before its bytes are appended to the connection's. A ``recv(256 KiB)`` allocated its
        # bytes object anew each time, which under serve's fixed mmap threshold was an mmap, page faults, an
        # mremap and an munmap per read. The scratch (256 KiB, constant) is in the slack share of the bound.
        self._pack = frames.packer()
        self._scratch = memoryview(bytearray(_READ_CHUNK))

    # -- called from other threads ---------------------------------------------------------------------------
    def post(self, conn: Conn, obj: dict[str, Any] | None, *, close: bool = False, wake: bool = True) -> None:
        """Queue a reply (and/or a close) for ``conn``; never blocks (the writer thread calls this).

        ``wake=False`` leaves the wake-up to the caller, who then calls :meth:`wake` once for all it posted: each
        wake-up is a system call, and one that the loop thread answers by asking for the GIL the writer holds.
        """
        self._posted.append((conn, obj, close))
        if wake:
            self.wake()

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # full: the loop is already due to wake up
            self._wake_w.send(b"\0")

    def stop_reading(self) -> None:
        self._stop_reading.set()
        self.wake()

    def finish(self) -> None:
        self._finish.set()
        self.wake()

    def clients(self) -> int:
        return len(self._conns)

    def memory(self) -> int:
        """Bytes held now: frames waiting for the writer, the batch it has decoded, input buffers (as allocated,
        partly read frames included) and unsent replies."""
        return self.accounting.backlog + self.accounting.decoded + self._inbuf_bytes + self._outbuf_bytes

    def memory_parts(self) -> dict[str, int]:
        """:meth:`memory` in its parts, for ``status``."""
        return {
            "memory_frames": self.accounting.backlog,
            "memory_decoded": self.accounting.decoded,
            "memory_buffers": self._inbuf_bytes + self._outbuf_bytes,
        }

    def _held(self) -> int:
        """What the loop reads against: all it holds, plus the writer reserve in place of the writer's decoded
        batch (the writer may start decoding the next frame at any moment), plus a sixteenth of the bound for what
        no count sees (allocator slack, the interpreter's own objects: ~1.5 MiB at 64 MiB, measured)."""
        return (
            self.accounting.backlog
            + self._inbuf_bytes
            + self._outbuf_bytes
            + self.writer_reserve
            + self.max_memory // _SLACK_SHARE
        )

    # -- the loop thread -------------------------------------------------------------------------------------
    def run(self) -> None:
        """Serve until :meth:`finish`; an error in one step is counted and logged, never the end of the loop."""
        while True:
            try:
                if self._step():
                    break
            except Exception:
                self._count("loop_errors")
                log.exception("flocklog hub: error in the connection loop (it goes on)")
                time.sleep(0.01)
        self._shutdown()

    def _step(self) -> bool:
        if self._stop_reading.is_set() and self._listening:
            for sock in list(self._listening):
                self._sel.unregister(sock)
            self._listening.clear()
            for conn in list(self._conns):
                self._interest(conn)
        for key, mask in self._sel.select(_HOUSEKEEPING):
            if key.data is _LISTEN:
                self._accept(key.fileobj)  # type: ignore[arg-type]  # listeners are sockets
            elif key.data is _WAKE:
                with contextlib.suppress(OSError):  # a short read drained it: no second recv to see EAGAIN
                    while len(self._wake_r.recv(4096)) == 4096:
                        pass
            else:
                peer: Conn = key.data
                if mask & selectors.EVENT_WRITE:
                    self._flush(peer)
                if mask & selectors.EVENT_READ and not peer.closed:
                    self._read(peer)
        self._apply_posted()
        now = time.monotonic()
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + _HOUSEKEEPING
            self._housekeeping(now)
        self._back_pressure()
        return self._finish.is_set()

    def _shutdown(self) -> None:
        self._apply_posted()
        for conn in list(self._conns):  # last replies (acks of what was written), best effort, then close
            with contextlib.suppress(OSError):
                if conn.outbuf:
                    conn.sock.send(conn.outbuf)
            self._close(conn)
        for sock in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                sock.close()
        with contextlib.suppress(Exception):
            self._sel.close()

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(64):  # a bounded burst, so reading keeps its turn under a connection storm
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS: pause accepting briefly instead of spinning
                self._count("accept_errors")
                log.warning("flocklog hub: cannot accept a connection (%s): pausing accepts for 0.5 s", exc)
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(listener)
                self._listening.discard(listener)
                self._accept_retry_at = time.monotonic() + 0.5
                self._paused_listeners.append(listener)
                return
            if len(self._conns) >= self.max_connections:
                self._count("connections_refused")
                with contextlib.suppress(OSError):
                    sock.close()
                continue
            try:
                sock.setblocking(False)
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                sock.close()
                continue
            conn = Conn(sock, str(peer) or "unix")
            self._conns.add(conn)
            self._count("connections_total")
            hello = {
                "t": "hello",
                "v": frames.PROTOCOL_VERSION,
                "nonce": conn.nonce,
                "auth": self.secret is not None,
                "max": self.max_frame,
            }
            # the hello is never sealed (it carries the nonce the tags are bound to) and not counted
            self._queue_bytes(conn, frames.seal(self._pack(hello), secret=None, nonce=b"", direction=b"", counter=0))
            self._interest(conn)
            self._flush(conn)

    def _reading_allowed(self, conn: Conn) -> bool:
        if conn.closing or self._stop_reading.is_set():
            return False
        # Paused: a connection in the middle of a frame may go on once the writer is idle, so partly read frames
        # can always complete (they would otherwise hold the budget forever); and any connection may read a small
        # frame (a status request: ``flocklog status`` must answer during a flood), never into a batch frame.
        if not self._paused:
            return True
        if conn.inbuf and self.accounting.backlog == 0:
            return True
        return self._small_room(conn) > 0

    @staticmethod
    def _small_room(conn: Conn) -> int:
        """How much more a connection may read while paused: up to the end of a small frame, none into a big one."""
        buf = conn.inbuf
        if len(buf) >= frames.HEADER.size and frames.HEADER.unpack_from(buf)[0] > _SMALL_FRAME:
            return 0
        return frames.HEADER.size + _SMALL_FRAME - len(buf)

    def _interest(self, conn: Conn) -> None:
        if conn.closed:
            return
        events = (selectors.EVENT_READ if self._reading_allowed(conn) else 0) | (
            selectors.EVENT_WRITE if conn.outbuf else 0
        )
        if events == conn.events:
            return
        if conn.events == 0:
            self._sel.register(conn.sock, events, conn)
        elif events == 0:
            self._sel.unregister(conn.sock)
        else:
            self._sel.modify(conn.sock, events, conn)
        conn.events = events

    def _back_pressure(self) -> None:
        used = self._held()
        if not self._paused and used >= self.max_memory:
            self._paused = True
            self._count("read_pauses")
        elif self._paused and used < self.max_memory * 3 // 4:
            self._paused = False
        else:
            if self._paused and self.accounting.backlog == 0:
                for conn in list(self._conns):
                    if conn.inbuf:
                        self._interest(conn)
            return
        for conn in list(self._conns):
            self._interest(conn)

    def _read(self, conn: Conn) -> None:
        if not self._reading_allowed(conn):
            self._interest(conn)
            return
        size = _READ_CHUNK
        if self._paused and not (conn.inbuf and self.accounting.backlog == 0):
            size = self._small_room(conn)  # > 0: _reading_allowed said so
        try:
            got = conn.sock.recv_into(self._scratch, size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not got:
            self._close(conn)
            return
        conn.last_active = time.monotonic()
        allocated = conn.inbuf.__alloc__()
        conn.inbuf += self._scratch[:got]
        buf = conn.inbuf
        self._inbuf_bytes += buf.__alloc__() - allocated  # counted as allocated: what the process really holds
        allocated = buf.__alloc__()
        while len(buf) >= frames.HEADER.size:
            (length,) = frames.HEADER.unpack_from(buf)
            if length == 0 or length > self.max_frame:
                self._count("oversized" if length else "malformed")
                log.warning(
                    "flocklog hub: closing %s: frame length %d outside 1..%d", conn.peer, length, self.max_frame
                )
                self._drop_input(conn)
                self._close(conn)
                return
            end = frames.HEADER.size + length
            if len(buf) < end:
                break
            with memoryview(buf) as view:  # one copy (a slice of the bytearray would be a second)
                payload = bytes(view[frames.HEADER.size : end])
            del buf[:end]
            self._inbuf_bytes += buf.__alloc__() - allocated  # a big cut from the front shrinks the allocation
            allocated = buf.__alloc__()
            if not self._frame(conn, payload):
                self._drop_input(conn)
                conn.closing = True
                self._interest(conn)
                if not conn.outbuf:
                    self._close(conn)
                return
            del payload
            if conn.closed:  # its replies overflowed (see _queue_bytes): _close dropped its input
                return
        if not buf:
            buf = conn.inbuf = bytearray()  # a bytearray keeps its allocation when its front is deleted
        elif buf.__alloc__() > 2 * len(buf) + _READ_CHUNK:
            buf = conn.inbuf = bytearray(buf)  # a partial frame behind consumed ones: only its own bytes
        self._inbuf_bytes += buf.__alloc__() - allocated
        if not self._paused and self._held() >= self.max_memory:
            self._back_pressure()  # now, not after the other connections' reads in this round
        if conn.outbuf:
            self._flush(conn)  # a status reply: send it now; what does not fit waits for EVENT_WRITE
        elif self._paused:
            self._interest(conn)

    def _drop_input(self, conn: Conn) -> None:
        self._inbuf_bytes -= conn.inbuf.__alloc__()
        conn.inbuf = bytearray()

    def _frame(self, conn: Conn, payload: bytes) -> bool:
        """Check one frame; False closes the connection (after sending the error reply)."""
        conn.received += 1
        body = payload
        if self.secret is not None:
            tag, body = payload[: frames.MAC_SIZE], payload[frames.MAC_SIZE :]
            expected = frames.mac(self.secret, conn.nonce, frames.TO_HUB, conn.received, body)
            if len(tag) < frames.MAC_SIZE or not hmac.compare_digest(tag, expected):
                self._count("auth_failed")
                self._reply(conn, {"t": "error", "kind": "auth", "reason": "frame failed authentication"})
                return False
        if len(body) > _SMALL_FRAME:
            conn.greeted = True
            cost = len(body) + 256
            self.accounting.add(cost)
            self._submit(conn, body, cost)  # a batch: decoded by the writer, one record at a time
            return True
        try:
            obj = frames.unpack(body)
            if not isinstance(obj, dict) or not isinstance(obj.get("t"), str):
                raise FrameError("frame body is not a map with a string 't' (type) field")
        except FrameError as exc:
            self._count("malformed")
            self._reply(conn, {"t": "error", "kind": "malformed", "reason": str(exc)})
            return False
        conn.greeted = True
        kind = obj["t"]
        if kind == "status":
            self._count("status_requests")
            self._reply(conn, {"t": "status", "data": self._status()})
            return True
        if kind != "b":
            self._count("malformed")
            self._reply(conn, {"t": "error", "kind": "malformed", "reason": f"unknown frame type {kind!r}"})
            return False
        cost = 3 * len(body) + 256
        self.accounting.add(cost)
        self._submit(conn, obj, cost)
        return True

    def _reply(self, conn: Conn, obj: dict[str, Any]) -> None:
        if conn.closed:
            return
        conn.sent += 1
        data = frames.seal(
            self._pack(obj), secret=self.secret, nonce=conn.nonce, direction=frames.TO_CLIENT, counter=conn.sent
        )
        self._queue_bytes(conn, data)

    def _queue_bytes(self, conn: Conn, data: bytes) -> None:
        conn.outbuf += data
        self._outbuf_bytes += len(data)
        if len(conn.outbuf) > _MAX_UNREAD_REPLIES:  # it sends and never reads: it may not hold our memory
            self._count("slow_peers_closed")
            log.warning("flocklog hub: closing %s: it leaves its replies unread", conn.peer)
            self._close(conn)

    def _apply_posted(self) -> None:
        touched: set[Conn] = set()
        while self._posted:
            conn, obj, close = self._posted.popleft()
            if conn.closed:
                continue
            if obj is not None:
                self._reply(conn, obj)
            if close:
                conn.closing = True
                self._drop_input(conn)
            touched.add(conn)
        for conn in touched:
            if not conn.closed:
                self._flush(conn)

    def _flush(self, conn: Conn) -> None:
        if conn.closed:
            return
        if conn.outbuf:
            try:
                sent = conn.sock.send(conn.outbuf)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._close(conn)
                return
            del conn.outbuf[:sent]
            self._outbuf_bytes -= sent
        if conn.closing and not conn.outbuf:
            self._close(conn)
            return
        self._interest(conn)

    def _housekeeping(self, now: float) -> None:
        paused = self._paused_listeners
        if paused and now >= self._accept_retry_at and not self._stop_reading.is_set():
            for sock in paused:
                self._sel.register(sock, selectors.EVENT_READ, _LISTEN)
                self._listening.add(sock)
            self._paused_listeners = []
        for conn in list(self._conns):
            if not conn.greeted and now - conn.opened > self.handshake_timeout:
                self._count("handshake_timeouts")
                self._close(conn)
            elif now - conn.last_active > self.idle_timeout and not conn.outbuf:
                self._count("idle_closed")
                self._close(conn)

    def _close(self, conn: Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        if conn.events:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(conn.sock)
            conn.events = 0
        self._drop_input(conn)
        self._outbuf_bytes -= len(conn.outbuf)
        conn.outbuf = bytearray()
        self._conns.discard(conn)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def forget_after_fork(self) -> None:
        """In a forked child: close the inherited descriptors (the parent's loop keeps them)."""
        for sock in [*self.listeners, self._wake_r, self._wake_w, *(c.sock for c in self._conns)]:
            with contextlib.suppress(OSError):
                sock.close()
        self._conns = set()
