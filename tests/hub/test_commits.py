"""How the hub commits batches: the loop thread writes a small one itself while the writer is idle; the batches
waiting together for the writer are written with one write and journaled as one group.

The writer is held inside a handler while other connections' batches queue up behind it, so the group (or the
busy writer) is there for certain, whatever the machine's load; the journal's torn-group case is built on disk
entry by entry.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from hubwriters import batch_frame, open_raw, read_reply, wait_until

import flocklog
from flocklog.hub import frames, start_hub
from flocklog.hub._dedup import Watermarks, file_marks
from flocklog.hub._writer import INLINE_MAX_COST


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


class ThreadNotingFileHandler(flocklog.RotatingFileHandler):
    """flocklog's file handler, noting which thread wrote each chunk; a chunk of more than ``hold_above`` records
    waits for the gate first. The note is set on the instance: the class keeps flocklog's own ``emit_batch``, so
    the loop may still commit to it (a subclass's ``emit_batch`` could block, and would keep the loop out)."""

    def __init__(self, path: Path, hold_above: int) -> None:
        super().__init__(path)
        self.setFormatter(logging.Formatter("%(message)s"))
        self.threads: list[tuple[str, int]] = []
        self.hold_above = hold_above
        self.entered = threading.Event()
        self.gate = threading.Event()
        own = self.emit_batch

        def noting(records: Sequence[logging.LogRecord]) -> None:
            self.threads.append((threading.current_thread().name, len(records)))
            if len(records) > self.hold_above:
                self.entered.set()
                assert self.gate.wait(60), "the test never opened the gate"
            own(records)

        self.emit_batch = noting  # type: ignore[method-assign]


def _batch(cid: str, seq: int, n: int, pad: int = 0) -> bytes:
    return batch_frame(cid, seq, (f"{cid}-{seq}-{i}" + " " * pad for i in range(n)))


def test_a_small_batch_is_written_by_the_loop_itself_while_the_writer_is_idle_and_a_large_one_by_the_writer(
    tmp_path: Path,
) -> None:
    log_path = tmp_path / "hub.log"
    handler = ThreadNotingFileHandler(log_path, hold_above=10**9)
    with start_hub([handler], state_path=tmp_path / "hub.dedup") as hub, open_raw(hub.address) as sock:
        sock.sendall(_batch("small", 0, 5))
        assert read_reply(sock) == {"t": "ack", "seq": 0}
        sock.sendall(_batch("large", 0, 200, pad=400))  # ~80 KB: more than the loop may take on
        assert read_reply(sock) == {"t": "ack", "seq": 0}
    handler.close()
    assert len(_batch("large", 0, 200, pad=400)) > INLINE_MAX_COST
    assert handler.threads == [("flocklog-hub-io", 5), ("flocklog-hub-writer", 200)]
    assert len(log_path.read_text().splitlines()) == 205


def test_while_the_writer_writes_a_small_batch_waits_for_it_in_the_queue_and_is_written_after_it(
    tmp_path: Path,
) -> None:
    log_path = tmp_path / "hub.log"
    handler = ThreadNotingFileHandler(log_path, hold_above=100)
    with start_hub([handler], state_path=tmp_path / "hub.dedup") as hub:
        large, small = open_raw(hub.address), open_raw(hub.address)
        large.sendall(_batch("large", 0, 200, pad=400))
        assert handler.entered.wait(60)  # the writer is inside the large batch, holding the commit
        small.sendall(_batch("small", 0, 5))
        wait_until(lambda: hub.status()["queue_depth"] == 1, 60, "the small batch queued, not written by the loop")
        handler.gate.set()
        assert read_reply(large) == {"t": "ack", "seq": 0} and read_reply(small) == {"t": "ack", "seq": 0}
        large.close()
        small.close()
    handler.close()
    assert handler.threads == [("flocklog-hub-writer", 200), ("flocklog-hub-writer", 5)]
    lines = log_path.read_text().splitlines()
    assert [line.strip() for line in lines] == [f"large-0-{i}" for i in range(200)] + [f"small-0-{i}" for i in range(5)]


def test_batches_waiting_together_are_written_in_one_write_recorded_once_and_each_acked(tmp_path: Path) -> None:
    gate = GateHandler()
    log_path = tmp_path / "hub.log"
    file_handler = flocklog.RotatingFileHandler(log_path)
    state = tmp_path / "hub.dedup"
    with start_hub([gate, file_handler], state_path=state) as hub:
        first = open_raw(hub.address)
        first.sendall(_batch("c0", 0, 3))
        assert gate.entered.wait(60)  # the writer is inside the first batch: what comes now waits in the queue
        others = [open_raw(hub.address) for _ in range(4)]
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
