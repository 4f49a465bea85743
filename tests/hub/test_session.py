"""The client's session reads replies with as few ``recv`` calls as it can, and never loses a byte doing so."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from flocklog.errors import FrameError
from flocklog.hub import frames
from flocklog.hub._address import parse_address
from flocklog.hub._session import ClientSession


def _frame(obj: dict[str, object]) -> bytes:
    return frames.seal(frames.pack(obj), secret=None, nonce=b"", direction=b"", counter=0)


def _peer(tmp_path: Path, replies: list[bytes]) -> tuple[str, threading.Thread]:
    """A stand-in hub: greets, then sends ``replies`` as they are (byte strings cut anywhere) and waits for EOF."""
    path = tmp_path / "hub.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, listener:
            conn.sendall(_frame({"t": "hello", "v": 1, "nonce": b"n" * 16, "auth": False, "max": 1 << 20}))
            for data in replies:
                conn.sendall(data)
            conn.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return f"unix:{path}", thread


def test_replies_that_arrive_together_or_in_pieces_are_each_read_whole_and_in_order(tmp_path: Path) -> None:
    acks = [_frame({"t": "ack", "seq": seq}) for seq in range(4)]
    big = _frame({"t": "status", "data": {"x": "y" * 200_000}})  # more than one recv's worth
    # two acks in one send, then one cut inside its header, then a large reply, then the last ack
    wire = [acks[0] + acks[1], acks[2][:2], acks[2][2:] + big, acks[3]]
    address, thread = _peer(tmp_path, wire)
    session = ClientSession(parse_address(address), None, 30)
    try:
        assert [session.receive()["seq"] for _ in range(3)] == [0, 1, 2]
        assert session.receive()["data"] == {"x": "y" * 200_000}
        assert session.receive() == {"t": "ack", "seq": 3}
    finally:
        session.close()
    thread.join(30)


def test_a_reply_larger_than_the_frame_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    address, thread = _peer(tmp_path, [frames.HEADER.pack((1 << 20) + 1)])
    session = ClientSession(parse_address(address), None, 30)
    try:
        with pytest.raises(FrameError, match="outside"):
            session.receive()
    finally:
        session.close()
    thread.join(30)
