"""Hub addresses (``unix:/path``, ``/abs/path``, ``tcp://host:port``, ``host:port``) and connecting to them."""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass

from flocklog.errors import ConfigError, HubError

ENV_ADDRESS = "FLOCKLOG_HUB_ADDRESS"
ENV_SECRET = "FLOCKLOG_HUB_SECRET"


@dataclass(frozen=True)
class Address:
    kind: str  # "unix" or "tcp"
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.kind == "unix" else f"tcp://{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.kind == "unix":
            return True
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_address(text: str) -> Address:
    """Parse an address; raises ConfigError saying which forms are accepted."""
    raw = text.strip()
    if raw.startswith("unix:"):
        path = raw[5:]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ConfigError(f"hub address {text!r} has no socket path: use unix:/path/to/hub.sock")
        return Address("unix", path=os.path.abspath(path))
    if raw.startswith("/"):
        return Address("unix", path=raw)
    hostport = raw[6:] if raw.startswith("tcp://") else raw
    host, sep, port = hostport.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(
            f"cannot parse hub address {text!r}: use unix:/path/hub.sock, /abs/path/hub.sock, "
            "tcp://127.0.0.1:9020 or 127.0.0.1:9020"
        )
    return Address("tcp", host=host, port=int(port))


def resolve_address(address: str | None) -> Address:
    """The given address, else ``$FLOCKLOG_HUB_ADDRESS``; a clear error when neither is set."""
    text = address or os.environ.get(ENV_ADDRESS)
    if not text:
        raise ConfigError(f"no hub address: pass address=... or set {ENV_ADDRESS} (e.g. unix:/run/app/hub.sock)")
    return parse_address(text)


def resolve_secret(secret: str | bytes | None) -> bytes | None:
    value = secret if secret is not None else os.environ.get(ENV_SECRET)
    if value is None or value == "" or value == b"":
        return None
    return value.encode("utf-8") if isinstance(value, str) else value


def connect(address: Address, timeout: float) -> socket.socket:
    """A connected blocking socket with ``timeout``; raises HubError (unreachable) with the address."""
    try:
        if address.kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(address.path)
            except BaseException:
                sock.close()
                raise
            return sock
        sock = socket.create_connection((address.host, address.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    except OSError as exc:
        raise HubError(f"cannot reach the flocklog hub at {address}: {exc}; is 'flocklog serve' running?") from exc
