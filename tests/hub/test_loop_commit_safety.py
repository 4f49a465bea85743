"""What the hub's connection thread may do when it writes a small batch itself (``BatchWriter.commit_now``): never
block on a handler that can wait (a FIFO whose reader stalled: only the writer thread waits, the hub keeps
answering), and never overtake a batch handed to the writer before it (the earlier one would be taken for a
duplicate: acked, never written)."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path

from hubwriters import batch_frame, open_raw, read_reply, wait_until

import flocklog
from flocklog.hub import frames, start_hub
from flocklog.hub._address import parse_address
from flocklog.hub._session import ClientSession


def _batch(cid: str, seq: int, n: int, pad: int = 0) -> bytes:
    return batch_frame(cid, seq, (f"{cid}-{seq}-{i}" + " " * pad for i in range(n)))


def test_a_stalled_fifo_reader_does_not_stop_the_hub_answering_status(tmp_path: Path) -> None:
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a log shipper that has stopped reading
    handler = flocklog.RotatingFileHandler(fifo)
    handler.setFormatter(logging.Formatter("%(message)s"))
    stop_draining = threading.Event()

    def drain() -> None:
        while not stop_draining.is_set():
            try:
                os.read(reader, 1 << 16)
            except BlockingIOError:
                stop_draining.wait(0.01)

    drainer = threading.Thread(target=drain, daemon=True)
    with start_hub([handler]) as hub:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(parse_address(hub.address).path)
            frames.read_payload(sock, frames.DEFAULT_MAX_FRAME)  # the hello
            for seq in range(3):  # ~38 KB each, small enough for the loop: the pipe (64 KiB) fills
                sock.sendall(_batch("f", seq, 90, pad=400))
            session = ClientSession(parse_address(hub.address), None, 20)
            try:
                session.send({"t": "status"})
                reply = session.receive()  # times out (OSError) when the loop thread is stuck in the FIFO write
            finally:
                session.close()
            assert reply["t"] == "status"
        finally:
            drainer.start()  # the shipper reads again: the blocked write completes, and the hub can stop
            sock.close()
    stop_draining.set()
    drainer.join(60)
    handler.close()
    os.close(reader)


def test_a_batch_held_back_from_a_full_group_is_not_overtaken_by_a_later_batch_of_its_connection(
    tmp_path: Path,
) -> None:
    """The writer holds back a batch that did not fit its group (x-0); while it does, the loop must not commit the
    same client's next batch (x-1) itself. The window (between the group's commit and the held-back one's, around
    the writer's wake-up of the loop) is made certain by sending x-1 from inside that wake-up."""
    log_path = tmp_path / "hub.log"
    handler = flocklog.RotatingFileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(message)s"))
    chunks: list[tuple[str, str]] = []
    entered, gate = threading.Event(), threading.Event()
    own_emit_batch = handler.emit_batch

    def noting(records: Sequence[logging.LogRecord]) -> None:
        first = records[0].getMessage() if records else ""
        chunks.append((threading.current_thread().name, first))
        if first.startswith("a-"):
            entered.set()
            assert gate.wait(60), "the test never opened the gate"
        own_emit_batch(records)

    # On the instance: the class's own emit_batch stays, so the hub still lets its connection thread write here.
    handler.emit_batch = noting  # type: ignore[method-assign]
    with start_hub([handler], state_path=tmp_path / "hub.dedup", max_frame=200_000) as hub:
        a, b, x = (open_raw(hub.address) for _ in range(3))
        a.sendall(_batch("a", 0, 200, pad=400))  # ~85 KB: the writer's, held at the gate
        assert entered.wait(60)
        b.sendall(_batch("b", 0, 300, pad=400))  # ~125 KB, queued
        wait_until(lambda: hub.status()["queue_depth"] == 1, 60, "b queued")
        x.sendall(_batch("x", 0, 300, pad=400))  # ~125 KB: b + x > max_frame, so x is held back from b's group
        wait_until(lambda: hub.status()["queue_depth"] == 2, 60, "x queued")

        loop = hub._loop
        original_wake = loop.wake
        fired = threading.Event()

        def wake() -> None:
            # The writer, right after b's group released the commit lock, x-0 held in its local ``item``.
            if (
                threading.current_thread().name == "flocklog-hub-writer"
                and not fired.is_set()
                and any(first.startswith("b-") for _, first in chunks)
            ):
                fired.set()
                x.sendall(_batch("x", 1, 5))  # the client's next batch (one more in flight)
                # Until the loop has taken x-1: committed it itself (the bug) or queued it behind x-0.
                wait_until(
                    lambda: any(first.startswith("x-1") for _, first in chunks) or hub.status()["queue_depth"] >= 1,
                    30,
                    "the hub to take x-1",
                )
            original_wake()

        loop.wake = wake  # type: ignore[method-assign]
        gate.set()
        assert read_reply(a) == {"t": "ack", "seq": 0}
        assert read_reply(b) == {"t": "ack", "seq": 0}
        replies = [read_reply(x), read_reply(x)]
        status = hub.status()
        for sock in (a, b, x):
            sock.close()
    handler.close()
    assert fired.is_set()
    assert replies == [{"t": "ack", "seq": 0}, {"t": "ack", "seq": 1}]
    lines = [line.strip() for line in log_path.read_text().splitlines()]
    x_lines = [line for line in lines if line.startswith("x-")]
    assert x_lines == [f"x-0-{i}" for i in range(300)] + [f"x-1-{i}" for i in range(5)]
    assert status["duplicate_batches"] == 0
