"""Group commit: the batches waiting together for the writer are written with one write, journaled as one group.

The writer is held inside a handler while other connections' batches queue up behind it, so the group is there
for certain, whatever the machine's load; the journal's torn-group case is built on disk entry by entry.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path

from hubwriters import wait_until

import flocklog
from flocklog.hub import frames, start_hub
from flocklog.hub._address import parse_address
from flocklog.hub._dedup import Watermarks, file_marks


class GateHandler(logging.Handler):
    """Records each chunk the writer hands over; the first one waits until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.gate = threading.Event()

    def emit_batch(self, records: list[logging.LogRecord]) -> None:
        self.calls.append([r.getMessage() for r in records])
        self.entered.set()
        assert self.gate.wait(60), "the test never opened the gate"

    def emit(self, record: logging.LogRecord) -> None:
        self.emit_batch([record])


def _batch(cid: str, seq: int, n: int) -> bytes:
    recs = []
    for i in range(n):
        text = f"{cid}-{seq}-{i}"
        record, _ = frames.encode_record(frames.record_to_fields(logging.makeLogRecord({"msg": text}), text), 4096)
        recs.append(record)
    body = frames.pack({"t": "b", "cid": cid, "seq": seq, "recs": recs, "st": [0, 0]})
    return frames.HEADER.pack(len(body)) + body


def _open(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(parse_address(address).path)
    sock.settimeout(60)
    frames.read_payload(sock, frames.DEFAULT_MAX_FRAME)  # the hello
    return sock


def test_batches_waiting_together_are_written_in_one_write_recorded_once_and_each_acked(tmp_path: Path) -> None:
    gate = GateHandler()
    log_path = tmp_path / "hub.log"
    file_handler = flocklog.RotatingFileHandler(log_path)
    state = tmp_path / "hub.dedup"
    with start_hub([gate, file_handler], state_path=state) as hub:
        first = _open(hub.address)
        first.sendall(_batch("c0", 0, 3))
        assert gate.entered.wait(60)  # the writer is inside the first batch: what comes now waits in the queue
        others = [_open(hub.address) for _ in range(4)]
        # c1's resend on a new connection comes last, in the same group as its first send.
        for queued, (sock, cid) in enumerate(zip(others, ["c1", "c2", "c3", "c1"], strict=True), start=1):
            sock.sendall(_batch(cid, 0, 3))
            wait_until(lambda n=queued: hub.status()["queue_depth"] == n, 60, f"{queued} batches queued")
        gate.gate.set()
        for sock in [first, *others]:
            reply = frames.unpack(frames.read_payload(sock, frames.DEFAULT_MAX_FRAME))
            assert reply["t"] == "ack" and reply["seq"] == 0, reply
            sock.close()
        status = hub.status()
    file_handler.close()
    expected = [f"{cid}-0-{i}" for cid in ("c0", "c1", "c2", "c3") for i in range(3)]
    assert gate.calls == [expected[:3], expected[3:]]  # the first batch alone, then the group in one hand-over
    assert log_path.read_text().splitlines() == expected
    assert status["batches"] == 5 and status["duplicate_batches"] == 1, status
    assert status["records_written"] == 12, status
    journal = Watermarks(os.fspath(state), 100)
    try:
        assert journal.dangling == []
        assert [journal.last(cid) for cid in ("c0", "c1", "c2", "c3")] == [0, 0, 0, 0]
    finally:
        journal.close()


def test_a_group_whose_done_entries_a_kill_cut_short_is_rolled_back_whole_and_none_of_it_remembered(
    tmp_path: Path,
) -> None:
    log_path = tmp_path / "hub.log"
    log_path.write_text("before\n")
    handler = logging.FileHandler(log_path)
    marks = file_marks([handler])
    handler.close()
    path = tmp_path / "hub.dedup"
    journal = Watermarks(os.fspath(path), 100)
    journal.begin([("a", 0), ("b", 4)], marks)
    journal.close()
    # The kill: a's done entry reached the file whole, b's only in part (they are one write of the group's).
    entries = b"".join(frames.HEADER.pack(len(body)) + body for body in (frames.pack(["a", 0]), frames.pack(["b", 4])))
    with path.open("ab") as f:
        f.write(entries[: len(entries) - 3])
    reloaded = Watermarks(os.fspath(path), 100)
    try:
        assert reloaded.dangling == marks  # the files go back to before the group: both batches are resent
        assert reloaded.last("a") == reloaded.last("b") == -1  # ... and both are written then, a included
    finally:
        reloaded.close()


def test_a_group_whose_done_entries_all_reached_the_journal_is_remembered_whole(tmp_path: Path) -> None:
    path = tmp_path / "hub.dedup"
    journal = Watermarks(os.fspath(path), 100)
    journal.begin([("a", 0), ("b", 4)], [(os.fspath(tmp_path / "hub.log"), 1, 2, 0)])
    journal.record([("a", 0), ("b", 4)])
    journal.close()
    reloaded = Watermarks(os.fspath(path), 100)
    try:
        assert reloaded.dangling == []
        assert (reloaded.last("a"), reloaded.last("b")) == (0, 4)
    finally:
        reloaded.close()
