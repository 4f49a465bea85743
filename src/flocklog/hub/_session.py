"""One client connection to a hub: the hello handshake, then sealed request/reply frames with counters."""

from __future__ import annotations

import contextlib
import socket
from typing import Any

from flocklog.errors import FrameError, HubError
from flocklog.hub import frames
from flocklog.hub._address import Address, connect

#: The smallest frame limit a hub may advertise: a record and its envelope must fit.
MIN_HUB_FRAME = 4096
_RECV_SIZE = 64 * 1024


class DowngradeError(HubError):
    """A client with a secret met a hub that does not authenticate: it may be an impostor."""


class Rejected(HubError):
    """The hub read a frame and found it malformed: resending the same bytes can never succeed."""


class ClientSession:
    """A blocking connection that has completed the hub's hello; not thread-safe (one sender owns it)."""

    def __init__(self, address: Address, secret: bytes | None, timeout: float) -> None:
        self.sock: socket.socket = connect(address, timeout)
        try:
            hello = frames.open_payload(
                frames.read_payload(self.sock, frames.DEFAULT_MAX_FRAME),
                secret=None,
                nonce=b"",
                direction=frames.TO_CLIENT,
                counter=0,
            )
            nonce = hello.get("nonce")
            if hello["t"] != "hello" or not isinstance(nonce, bytes):
                raise FrameError("the peer did not greet like a flocklog hub")
            advertised = hello.get("max", frames.DEFAULT_MAX_FRAME)
            if type(advertised) is not int or advertised < MIN_HUB_FRAME:
                raise FrameError(f"the hub advertised an unusable frame limit {advertised!r}")
            self.max_frame = advertised  # batches are cut to this (a bigger frame gets the connection closed)
            self.nonce = nonce
            auth = bool(hello.get("auth"))
            if auth and secret is None:
                raise HubError(
                    f"the hub at {address} requires a shared secret: pass secret=... or set FLOCKLOG_HUB_SECRET"
                )
            if secret is not None and not auth:
                # A downgrade: whoever answers here could be a fake hub acking records it never writes.
                raise DowngradeError(
                    f"refusing the hub at {address}: this client has a shared secret but the hub does not "
                    "authenticate (start it with --secret / FLOCKLOG_HUB_SECRET); records stay spooled"
                )
            self.secret = secret if auth else None
        except (OSError, ConnectionError, KeyError) as exc:
            self.sock.close()
            raise HubError(f"the hub at {address} closed the connection during the handshake: {exc}") from exc
        except BaseException:
            self.sock.close()
            raise
        self.sent = 0
        self.received = 0
        self._inbuf = bytearray()  # what a recv brought beyond the frame it was reading

    def send(self, obj: dict[str, Any]) -> None:
        self.sendall(self.seal(frames.pack(obj)))

    def seal(self, body: bytes) -> bytes:
        self.sent += 1
        return frames.seal(body, secret=self.secret, nonce=self.nonce, direction=frames.TO_HUB, counter=self.sent)

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self) -> dict[str, Any]:
        self.received += 1
        payload = self._read_payload()
        reply: dict[str, Any] = frames.open_payload(
            payload, secret=self.secret, nonce=self.nonce, direction=frames.TO_CLIENT, counter=self.received
        )
        if reply["t"] == "error":
            if reply.get("kind") == "malformed":
                raise Rejected(f"the hub rejected a frame as malformed: {reply.get('reason')}")
            raise HubError(f"the hub refused a frame: {reply.get('reason')}")
        return reply

    def _read_payload(self) -> bytes:
        """One reply's payload; an ack (header and body) takes one ``recv``, not the two of ``frames.read_payload``.

        The sender is a thread of the application: each system call of it is a GIL hand-off that an emitting thread
        may wait for, once per batch. Whatever a ``recv`` brings beyond the frame stays for the next reply.
        """
        buf = self._inbuf
        while True:
            if len(buf) >= frames.HEADER.size:
                (length,) = frames.HEADER.unpack_from(buf)
                if length == 0 or length > self.max_frame:
                    raise FrameError(f"frame length {length} outside 1..{self.max_frame}")
                end = frames.HEADER.size + length
                if len(buf) >= end:
                    payload = bytes(buf[frames.HEADER.size : end])
                    del buf[:end]
                    return payload
            chunk = self.sock.recv(_RECV_SIZE)
            if not chunk:
                raise ConnectionError("connection closed mid-frame" if buf else "connection closed")
            buf += chunk

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
