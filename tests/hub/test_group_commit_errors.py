"""A malformed frame and a batch with a malformed record inside a group do not sink their neighbours."""

from __future__ import annotations

import socket
from pathlib import Path

from hubwriters import open_raw, wait_until
from test_commits import GateHandler, _batch

import flocklog
from flocklog.hub import frames, start_hub


def test_a_malformed_frame_and_a_bad_record_in_a_group_leave_the_rest_of_the_group_written_and_acked(
    tmp_path: Path,
) -> None:
    gate = GateHandler()
    log_path = tmp_path / "hub.log"
    file_handler = flocklog.RotatingFileHandler(log_path)
    good = _batch("c1", 0, 3)
    junk = frames.pack({"t": "b", "cid": "m", "seq": 0, "recs": "x" * 6000, "st": [0, 0]})  # recs not a list
    bad_body = frames.unpack(_batch("c2", 0, 3)[frames.HEADER.size :])
    bad_body["recs"][1] = b"\x93\x01\x02\x03"  # a record of the wrong shape
    bad_body["recs"].append(b"y" * 5000)  # and big enough to be the writer's
    bad = frames.pack(bad_body)
    with start_hub([gate, file_handler], state_path=tmp_path / "hub.dedup") as hub:
        first = open_raw(hub.address)
        first.sendall(_batch("c0", 0, 3))
        assert gate.entered.wait(60)
        socks: list[socket.socket] = []
        for n, wire in enumerate(
            [good, frames.HEADER.pack(len(junk)) + junk, frames.HEADER.pack(len(bad)) + bad, _batch("c3", 0, 3)],
            start=1,
        ):
            sock = open_raw(hub.address)
            sock.sendall(wire)
            socks.append(sock)
            wait_until(lambda n=n: hub.status()["queue_depth"] == n, 60, f"{n} queued")
        gate.gate.set()
        replies = [frames.unpack(frames.read_payload(s, frames.DEFAULT_MAX_FRAME)) for s in [first, *socks]]
        status = hub.status()
        for s in [first, *socks]:
            s.close()
    file_handler.close()
    kinds = [(r["t"], r.get("seq", r.get("kind"))) for r in replies]
    assert kinds == [("ack", 0), ("ack", 0), ("error", "malformed"), ("error", "malformed"), ("ack", 0)], replies
    lines = log_path.read_text().splitlines()
    assert lines == [
        "c0-0-0",
        "c0-0-1",
        "c0-0-2",
        "c1-0-0",
        "c1-0-1",
        "c1-0-2",
        "c2-0-0",
        "c2-0-2",
        "c3-0-0",
        "c3-0-1",
        "c3-0-2",
    ], lines
    assert status["writer_errors"] == 0 and status["malformed"] == 2, status
