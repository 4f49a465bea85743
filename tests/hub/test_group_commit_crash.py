"""A hub SIGKILLed at each point of a group commit (two batches waiting together) loses, duplicates
and tears nothing once the clients resend after a restart."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hubwriters import batch_frame, open_raw, wait_until

import flocklog
from flocklog.hub import frames, query_status, start_hub
from flocklog.hub._crashpoints import ENV_CRASH


def _batch(cid: str, seq: int, n: int) -> bytes:
    return batch_frame(cid, seq, (f"{cid}-{seq}-{i:03d} " + "x" * 150 for i in range(n)))


SIZES = {"c0": 3, "c1": 400, "c2": 400}  # the group c1+c2: 800 records, two chunks of the writer


@pytest.mark.parametrize(
    "point",
    ["mid_begin:2", "mid_write:2", "mid_write:3", "after_write:2", "mid_watermark:2", "after_watermark:2"],
)
def test_a_kill_inside_a_group_commit_then_resends_write_every_record_once(tmp_path: Path, point: str) -> None:
    log, state, gate, address_file = (tmp_path / n for n in ("hub.log", "hub.dedup", "gate", "address"))
    script = Path(__file__).with_name("gated_hub.py")
    env = {**os.environ, ENV_CRASH: point}
    proc = subprocess.Popen([sys.executable, str(script), str(log), str(state), str(gate), str(address_file)], env=env)
    try:
        wait_until(address_file.exists, 60, "the hub up")
        address = address_file.read_text()
        socks = {cid: open_raw(address) for cid in SIZES}
        socks["c0"].sendall(_batch("c0", 0, SIZES["c0"]))
        wait_until(
            lambda: query_status(address)["batches"] == 1 and query_status(address)["queue_depth"] == 0, 20, "c0 taken"
        )
        for n, cid in enumerate(["c1", "c2"], start=1):
            socks[cid].sendall(_batch(cid, 0, SIZES[cid]))
            wait_until(lambda n=n: query_status(address)["queue_depth"] == n, 60, f"{n} queued")
        gate.write_text("go")
        assert proc.wait(60) == -9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    handler = flocklog.RotatingFileHandler(log)
    handler.setFormatter(logging.Formatter("%(message)s"))
    with start_hub([handler], state_path=state) as hub:
        for cid, n in SIZES.items():
            sock = open_raw(hub.address)
            sock.sendall(_batch(cid, 0, n))
            assert frames.unpack(frames.read_payload(sock, frames.DEFAULT_MAX_FRAME)) == {"t": "ack", "seq": 0}
            sock.close()
    handler.close()
    lines = log.read_text().splitlines()
    expected = [f"{cid}-0-{i:03d} " + "x" * 150 for cid, n in SIZES.items() for i in range(n)]
    assert sorted(lines) == sorted(expected), (len(lines), len(expected))
