"""The hub: accepts many clients, checks their frames, and hands rebuilt records to its handlers on ONE writer thread.

Reader threads (one per connection) only decode and validate; the writer thread owns the handlers, de-duplicates
batches by ``(client id, batch seq)`` and acks each batch after writing it, so a client knows what arrived and
resends the rest. A hub belongs to the pid that started it: a forked child can never stop the parent's hub.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import logging
import logging.config
import os
import queue
import shutil
import socket
import stat
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from flocklog import _lifecycle
from flocklog.errors import ConfigError, FrameError, HubError
from flocklog.hub import frames
from flocklog.hub._address import Address, parse_address, resolve_secret

log = logging.getLogger("flocklog.hub")

_MAX_TRACKED_CLIENTS = 100_000
_COUNTERS = (
    "connections_total",
    "batches",
    "records_received",
    "records_written",
    "duplicate_batches",
    "malformed",
    "oversized",
    "auth_failed",
    "handler_errors",
    "status_requests",
)


class _Conn:
    """One accepted connection: its socket, nonce and the counter of frames the hub sent on it."""

    def __init__(self, sock: socket.socket, peer: str, secret: bytes | None) -> None:
        self.sock = sock
        self.peer = peer
        self.secret = secret
        self.nonce = os.urandom(16)
        self.sent = 0
        self.lock = threading.Lock()
        self.closed = False

    def reply(self, obj: dict[str, Any], *, wait: bool = False) -> None:
        """Send a sealed reply; never blocks the writer thread (a client that does not read gets cut off)."""
        with self.lock:
            if self.closed:
                return
            self.sent += 1
            data = frames.seal(
                frames.pack(obj), secret=self.secret, nonce=self.nonce, direction=frames.TO_CLIENT, counter=self.sent
            )
            try:
                self.sock.sendall(data, 0 if wait else socket.MSG_DONTWAIT)
            except OSError:
                self._shutdown()

    def _shutdown(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self.lock:
            if not self.closed:
                self.closed = True
                self.sock.close()


class _Reopen:
    pass


class _Close:
    def __init__(self, conn: _Conn) -> None:
        self.conn = conn


_STOP = object()


def _default_formatter(handlers: Sequence[logging.Handler]) -> None:
    for handler in handlers:
        if handler.formatter is None:
            handler.setFormatter(logging.Formatter("%(message)s"))


def handlers_from_config(config: dict[str, Any]) -> list[logging.Handler]:
    """Build the root handlers of a logging dictConfig dict, then detach them from the root logger.

    dictConfig can only configure the global logging tree, so the config is applied (with
    ``disable_existing_loggers`` off) and the root logger's previous handlers and level are restored afterwards.
    """
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    cfg = copy.deepcopy(config)
    cfg.setdefault("version", 1)
    cfg["disable_existing_loggers"] = False
    try:
        logging.config.dictConfig(cfg)
    except (ValueError, TypeError, AttributeError, ImportError) as exc:
        raise ConfigError(f"the hub's logging config is invalid: {exc}") from exc
    handlers = [h for h in root.handlers if h not in saved_handlers]
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)
    if not handlers:
        raise ConfigError("the hub's logging config gives the root logger no handlers: add root.handlers = [...]")
    return handlers


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


class Hub:
    """A running hub; create it with :func:`start_hub` (or ``flocklog serve``)."""

    def __init__(
        self,
        handlers: Sequence[logging.Handler],
        *,
        addresses: Sequence[str] | None = None,
        secret: str | bytes | None = None,
        max_frame: int = frames.DEFAULT_MAX_FRAME,
        queue_size: int = 1024,
    ) -> None:
        self.handlers = list(handlers)
        _default_formatter(self.handlers)
        self.secret = resolve_secret(secret)
        self.max_frame = max_frame
        self.pid = os.getpid()
        self._private_dir: str | None = None
        parsed = [parse_address(a) for a in addresses or []]
        if not parsed:
            self._private_dir = tempfile.mkdtemp(prefix="flocklog-hub-")
            parsed = [Address("unix", path=os.path.join(self._private_dir, "hub.sock"))]
        for addr in parsed:
            if not addr.is_loopback and self.secret is None:
                raise ConfigError(
                    f"refusing to listen on non-loopback {addr} without a shared secret: "
                    "pass secret=... / --secret or set FLOCKLOG_HUB_SECRET (or bind 127.0.0.1)"
                )
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._counter_lock = threading.Lock()
        self._last_seq: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._client_stats: dict[str, tuple[int, int]] = {}
        self._conns: set[_Conn] = set()
        self._conn_threads: set[threading.Thread] = set()
        self._conns_lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = False
        self._started = time.time()
        self._listeners: list[tuple[Address, socket.socket]] = []
        self._threads: list[threading.Thread] = []
        try:
            for addr in parsed:
                self._listeners.append(self._listen(addr))
        except BaseException:
            self._close_listeners()
            raise
        self.addresses = [str(addr) for addr, _ in self._listeners]
        self.address = self.addresses[0]
        self._writer = threading.Thread(target=self._write_loop, name="flocklog-hub-writer", daemon=True)
        self._writer.start()
        for addr, sock in self._listeners:
            t = threading.Thread(
                target=self._accept_loop, args=(sock,), name=f"flocklog-hub-accept {addr}", daemon=True
            )
            t.start()
            self._threads.append(t)
        _lifecycle.register(
            self,
            stage=_lifecycle.Stage.HUBS,
            after_fork=Hub._forget_after_fork,
            at_exit=Hub._stop_at_exit,
            sigterm=False,
        )

    # -- listening -------------------------------------------------------------------------------------------
    def _listen(self, addr: Address) -> tuple[Address, socket.socket]:
        """Bind and listen; a TCP port 0 comes back as the real port."""
        if addr.kind == "unix":
            self._clear_stale_socket(addr)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(addr.path)
                os.chmod(addr.path, 0o600)
            except OSError as exc:
                sock.close()
                raise HubError(f"cannot listen on {addr}: {exc}") from exc
        else:
            family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((addr.host, addr.port))
            except OSError as exc:
                sock.close()
                raise HubError(f"cannot listen on {addr}: {exc}") from exc
            if addr.port == 0:
                addr = Address("tcp", host=addr.host, port=sock.getsockname()[1])
        sock.listen(128)
        sock.settimeout(0.2)
        return addr, sock

    def _clear_stale_socket(self, addr: Address) -> None:
        try:
            mode = os.stat(addr.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise HubError(f"{addr.path} exists and is not a socket: choose another hub path")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(addr.path)
        except OSError:
            os.unlink(addr.path)  # a dead hub's leftover
            return
        finally:
            probe.close()
        raise HubError(f"another hub is already listening on {addr}: stop it or choose another path")

    def _close_listeners(self) -> None:
        for addr, sock in self._listeners:
            with contextlib.suppress(OSError):
                sock.close()
            if addr.kind == "unix" and os.getpid() == self.pid:
                with contextlib.suppress(OSError):
                    os.unlink(addr.path)

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                sock, peer = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.05)  # EMFILE and friends: back off instead of spinning
                continue
            sock.settimeout(None)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(sock, str(peer), self.secret)
            t = threading.Thread(target=self._serve_conn, args=(conn,), name="flocklog-hub-conn", daemon=True)
            with self._conns_lock:
                if self._stopping.is_set():
                    conn.close()
                    return
                self._conns.add(conn)
                self._conn_threads.add(t)
            self._count("connections_total")
            t.start()

    # -- reading ---------------------------------------------------------------------------------------------
    def _count(self, name: str, n: int = 1) -> None:
        with self._counter_lock:
            self._counters[name] += n

    def _serve_conn(self, conn: _Conn) -> None:
        received = 0
        try:
            hello = {
                "t": "hello",
                "v": frames.PROTOCOL_VERSION,
                "nonce": conn.nonce,
                "auth": self.secret is not None,
                "max": self.max_frame,
            }
            # the hello is never sealed (it carries the nonce the tags are bound to) and not counted
            conn.sock.sendall(frames.seal(frames.pack(hello), secret=None, nonce=b"", direction=b"", counter=0))
            while True:
                try:
                    header = frames.read_exact(conn.sock, frames.HEADER.size)
                except ConnectionError:
                    return
                (length,) = frames.HEADER.unpack(header)
                if length == 0 or length > self.max_frame:
                    self._count("oversized" if length else "malformed")
                    log.warning(
                        "flocklog hub: closing %s: frame length %d outside 1..%d", conn.peer, length, self.max_frame
                    )
                    return
                payload = frames.read_exact(conn.sock, length)
                received += 1
                try:
                    obj = frames.open_payload(
                        payload, secret=self.secret, nonce=conn.nonce, direction=frames.TO_HUB, counter=received
                    )
                except FrameError as exc:
                    self._count("auth_failed" if "authentication" in str(exc) else "malformed")
                    kind = "auth" if "authentication" in str(exc) else "malformed"
                    conn.reply({"t": "error", "kind": kind, "reason": str(exc)})
                    return
                if not self._handle_frame(conn, obj):
                    return
        except (OSError, ConnectionError):
            return
        finally:
            with self._conns_lock:
                self._conn_threads.discard(threading.current_thread())
            self._queue.put(_Close(conn))

    def _handle_frame(self, conn: _Conn, obj: dict[str, Any]) -> bool:
        kind = obj["t"]
        if kind == "status":
            self._count("status_requests")
            conn.reply({"t": "status", "data": self.status()}, wait=True)
            return True
        if kind != "b":
            self._count("malformed")
            conn.reply({"t": "error", "kind": "malformed", "reason": f"unknown frame type {kind!r}"})
            return False
        cid, seq, recs, stats = obj.get("cid"), obj.get("seq"), obj.get("recs"), obj.get("st", [0, 0])
        try:
            if not isinstance(cid, str) or not 0 < len(cid) <= 64:
                raise FrameError("batch 'cid' must be a short string")
            if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
                raise FrameError("batch 'seq' must be a non-negative integer")
            if not isinstance(recs, list):
                raise FrameError("batch 'recs' must be a list")
            if not (isinstance(stats, list) and len(stats) == 2 and all(type(v) is int for v in stats)):
                raise FrameError("batch 'st' must be [spooled, dropped]")
            records = [frames.decode_record(r) for r in recs]
        except FrameError as exc:
            self._count("malformed")
            conn.reply({"t": "error", "kind": "malformed", "reason": str(exc)})
            return False
        self._count("batches")
        self._count("records_received", len(records))
        self._queue.put((conn, cid, seq, records, (stats[0], stats[1])))
        return True

    # -- writing (the only thread that touches the handlers) -------------------------------------------------
    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if isinstance(item, _Close):
                with self._conns_lock:
                    self._conns.discard(item.conn)
                item.conn.close()
                continue
            if isinstance(item, _Reopen):
                for handler in self.handlers:
                    try:
                        reopen_handler(handler)
                    except Exception:
                        self._count("handler_errors")
                        log.exception("flocklog hub: cannot reopen %r", handler)
                continue
            conn, cid, seq, records, stats = item
            last = self._last_seq.get(cid, -1)
            if seq > last:
                written = 0
                for fields in records:
                    record = frames.build_record(fields)
                    for handler in self.handlers:
                        if record.levelno < handler.level:
                            continue
                        try:
                            handler.handle(record)
                        except Exception:  # a filter that raises; emit() errors go to handleError already
                            self._count("handler_errors")
                    written += 1
                self._last_seq[cid] = seq
                self._last_seq.move_to_end(cid)
                if len(self._last_seq) > _MAX_TRACKED_CLIENTS:
                    self._last_seq.popitem(last=False)
                self._client_stats[cid] = stats
                if len(self._client_stats) > _MAX_TRACKED_CLIENTS:
                    self._client_stats.pop(next(iter(self._client_stats)))
                self._count("records_written", written)
            else:
                self._count("duplicate_batches")
            conn.reply({"t": "ack", "seq": seq})

    # -- public ----------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Counters for ``flocklog status``: plain JSON-safe data."""
        with self._counter_lock:
            data: dict[str, Any] = dict(self._counters)
        with self._conns_lock:
            data["clients"] = len(self._conns)
        stats = list(self._client_stats.values())
        data.update(
            pid=self.pid,
            address=self.address,
            addresses=list(self.addresses),
            uptime_s=round(time.time() - self._started, 3),
            queue_depth=self._queue.qsize(),
            clients_spooled=sum(s[0] for s in stats),
            clients_dropped=sum(s[1] for s in stats),
            authenticated=self.secret is not None,
            running=not self._stopping.is_set(),
        )
        return data

    def reopen(self) -> None:
        """Ask the writer thread to reopen every handler's file (SIGHUP after logrotate)."""
        if os.getpid() == self.pid and not self._stopping.is_set():
            self._queue.put(_Reopen())

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, write and ack everything already received, flush the handlers (they stay open).

        From any pid but the owner's this only warns: a forked child must never stop its parent's hub.
        """
        if os.getpid() != self.pid:
            warnings.warn(
                f"Hub.stop() called in pid {os.getpid()}, but the hub belongs to pid {self.pid}: ignored",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        if self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + timeout
        self._stopping.set()
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._close_listeners()
        with self._conns_lock:
            conns = list(self._conns)
            readers = list(self._conn_threads)
        for conn in conns:  # readers see EOF; what they already queued is still written and acked
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RD)
        for t in readers:
            t.join(max(0.0, deadline - time.monotonic()))
        try:
            self._queue.put(_STOP, timeout=max(0.01, deadline - time.monotonic()))
        except queue.Full:
            log.warning("flocklog hub: stop timed out with %d batches unwritten", self._queue.qsize())
        self._writer.join(max(0.0, deadline - time.monotonic()))
        for handler in self.handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        with self._conns_lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)

    def _stop_at_exit(self) -> None:
        """A hub nobody stopped still writes what it already received before the interpreter exits."""
        if self.pid == os.getpid():
            self.stop(timeout=2.0)

    def _forget_after_fork(self) -> None:
        """In a forked child: drop the inherited descriptors; the parent's hub keeps running untouched."""
        for _, sock in self._listeners:
            with contextlib.suppress(OSError):
                sock.close()
        for conn in list(self._conns):
            with contextlib.suppress(OSError):
                conn.sock.close()
        self._conns = set()
        self._conns_lock = threading.Lock()
        self._counter_lock = threading.Lock()

    def __enter__(self) -> Hub:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Hub {self.address} pid={self.pid}>"


def start_hub(
    handlers: Sequence[logging.Handler] | None = None,
    *,
    address: str | None = None,
    secret: str | None = None,
    config: dict[str, Any] | None = None,
    max_frame: int = frames.DEFAULT_MAX_FRAME,
) -> Hub:
    """Start a hub in this process (background threads) writing through ``handlers`` (or ``config``'s root ones).

    ``address`` None listens on a Unix socket in a fresh private directory; read it back from ``hub.address``
    and hand it to clients (``FLOCKLOG_HUB_ADDRESS``).
    """
    if handlers is None and config is None:
        raise ConfigError("start_hub needs handlers=[...] or config={...} (a logging dictConfig dict)")
    chosen = list(handlers or []) + (handlers_from_config(config) if config is not None else [])
    return Hub(chosen, addresses=[address] if address else None, secret=secret, max_frame=max_frame)
