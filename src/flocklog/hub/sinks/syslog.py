"""The syslog sink: RFC 5424 messages over UDP, TCP (octet-counting framing, RFC 6587) or a Unix socket.

Why not the stdlib's ``logging.handlers.SysLogHandler``: it is enough for a single process writing short lines to
the local ``/dev/log`` and accepting that a dead daemon loses them. It is not enough for the hub: it writes the
old BSD form (``<PRI>message``: no timestamp, host, PROCID or structured data, so every record would carry the
hub's identity rather than the worker's), frames TCP by a trailing NUL or newline (a multi-line message or
traceback splits into several messages), sends on the caller's thread (a slow TCP receiver stalls the hub), and
neither retries nor spools. This sink keeps the worker's pid as PROCID and its logger, thread and level as
structured data, and goes through the shared queue, sender and spool.

Delivery: UDP is fire-and-forget by nature (a missing receiver is invisible, except as ``ECONNREFUSED`` on a later
send); TCP and Unix stream sockets detect a dead receiver on the next send and reconnect, the batch being spooled
meanwhile; but syslog has no acknowledgement, so what the kernel accepted just before a connection broke may be
lost or, after a retry, doubled. Use RELP or OTLP where a receipt matters.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from typing import Any

from flocklog.errors import ConfigError
from flocklog.hub.sinks._base import SinkHandler
from flocklog.hub.sinks._fields import rfc3339

# RFC 5612 reserves 32473 for documentation; users with their own Private Enterprise Number can pass sd_id=...
DEFAULT_SD_ID = "flocklog@32473"
FACILITIES = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    **{f"local{i}": 16 + i for i in range(8)},
}


def severity(levelno: int) -> int:
    """Python level -> syslog severity: CRITICAL 2 (crit), ERROR 3, WARNING 4, INFO 6, DEBUG and below 7."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def _header_field(value: object, limit: int) -> str:
    """PRINTUSASCII without spaces, at most ``limit`` characters; empty becomes the NILVALUE ``-``."""
    text = "".join(c for c in str(value) if 33 <= ord(c) <= 126)[:limit]
    return text or "-"


def _sd_value(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _sd_name(value: str) -> str:
    return "".join(c for c in value if 33 <= ord(c) <= 126 and c not in '= ]"')[:32] or "-"


def parse_address(address: str) -> tuple[str, Any]:
    """``udp://host:port``, ``tcp://host:port`` or ``unix:/path`` -> (transport, sockaddr)."""
    if address.startswith("unix:"):
        path = address[5:]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ConfigError(f"syslog address {address!r}: give a socket path, e.g. unix:/dev/log")
        return "unix", path
    for scheme in ("udp", "tcp"):
        prefix = f"{scheme}://"
        if address.startswith(prefix):
            host, sep, port = address[len(prefix) :].rpartition(":")
            if not sep or not port.isdigit():
                raise ConfigError(f"syslog address {address!r}: use {scheme}://HOST:PORT")
            return scheme, (host.strip("[]") or "127.0.0.1", int(port))
    raise ConfigError(f"syslog address {address!r}: use udp://HOST:PORT, tcp://HOST:PORT or unix:/path")


class SyslogHandler(SinkHandler):
    """RFC 5424 syslog from the hub: PROCID is the worker's pid, structured data its logger, thread and level.

    ``address``: ``unix:/dev/log`` (default), ``udp://HOST:PORT`` or ``tcp://HOST:PORT``. ``max_message`` bytes
    bounds a message (longer ones are cut and counted as ``truncated``; 2048 is the safe UDP size of RFC 5426,
    TCP receivers take more: rsyslog's default ``maxMessageSize`` is 8k).
    """

    kind = "syslog"
    extra_counters = ("truncated",)

    def __init__(
        self,
        level: int | str = logging.NOTSET,
        *,
        address: str = "unix:/dev/log",
        facility: str | int = "user",
        app_name: str = "flocklog",
        hostname: str | None = None,
        sd_id: str = DEFAULT_SD_ID,
        max_message: int = 8192,
        timeout: float = 5.0,
        **options: Any,
    ) -> None:
        self.transport, self.sockaddr = parse_address(address)
        if isinstance(facility, str):
            if facility.lower() not in FACILITIES:
                raise ConfigError(f"syslog facility {facility!r}: use one of {', '.join(FACILITIES)}")
            facility = FACILITIES[facility.lower()]
        self.facility = int(facility)
        self.app_name = _header_field(app_name, 48)
        self.hostname = _header_field(hostname or socket.gethostname(), 255)
        self.sd_id = _sd_name(sd_id)
        self.max_message = max_message
        self.timeout = timeout
        self.address = address
        self._sock: socket.socket | None = None
        super().__init__(level, **options)

    def prepare(self, record: logging.LogRecord) -> Any:
        pri = self.facility * 8 + severity(record.levelno)
        sd = (
            f'[{self.sd_id} logger="{_sd_value(record.name)}" thread="{record.thread}" '
            f'threadName="{_sd_value(record.threadName)}" level="{record.levelname}"]'
        )
        header = (
            f"<{pri}>1 {rfc3339(record.created)} {self.hostname} {self.app_name} "
            f"{_header_field(record.process, 128)} {_header_field(record.name, 32)} {sd} "
        )
        message = header + self.format(record)
        raw = message.encode("utf-8", errors="backslashreplace")
        if len(raw) > self.max_message:
            self._count("truncated")
            message = raw[: self.max_message].decode("utf-8", errors="ignore")
        return message

    # -- the sender thread's side ----------------------------------------------------------------------------
    def _connect(self) -> socket.socket:
        if self.transport == "unix":
            last: OSError | None = None
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):  # /dev/log is a datagram socket; some are stream
                sock = socket.socket(socket.AF_UNIX, kind)
                sock.settimeout(self.timeout)
                try:
                    sock.connect(self.sockaddr)
                    return sock
                except OSError as exc:
                    sock.close()
                    last = exc
            assert last is not None
            raise last
        host, port = self.sockaddr
        kind = socket.SOCK_DGRAM if self.transport == "udp" else socket.SOCK_STREAM
        info = socket.getaddrinfo(host, port, 0, kind)[0]
        sock = socket.socket(info[0], kind)
        sock.settimeout(self.timeout)
        try:
            sock.connect(info[4])
        except OSError:
            sock.close()
            raise
        return sock

    def deliver(self, items: list[Any]) -> None:
        if self._sock is None:
            self._sock = self._connect()
        sock = self._sock
        try:
            if sock.type == socket.SOCK_STREAM:
                frames = []
                for message in items:
                    data = message.encode("utf-8", errors="backslashreplace")
                    frames.append(b"%d " % len(data) + data)  # octet counting (RFC 6587 3.4.1)
                sock.sendall(b"".join(frames))
            else:
                for message in items:
                    sock.send(message.encode("utf-8", errors="backslashreplace"))
        except OSError:
            self.close_transport()
            raise

    def close_transport(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def _reset_after_fork(self) -> None:
        if self._pid != os.getpid():
            self._sock = None  # the parent's socket: never written from the child
        super()._reset_after_fork()
