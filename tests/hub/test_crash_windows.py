"""Exactly once across a hub SIGKILL, one window at a time: the hub kills itself at a named point of its writer.

A random SIGKILL (``sigkill_restarts.py``) finds these windows only now and then; ``FLOCKLOG_HUB_TEST_CRASH``
(:mod:`flocklog.hub._crashpoints`) puts the kill exactly in each one, on the real disk, every run.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
from hubwriters import batch_frame, hub_config, open_raw, serve, stop_serve

from flocklog.hub import frames, query_status
from flocklog.hub._crashpoints import ENV_CRASH

HANDLERS = ["flocklog.RotatingFileHandler", "logging.FileHandler"]


def _batch(cid: str, seq: int, n: int = 40) -> bytes:
    # records of ~170 bytes: a batch of 40 spans two pages
    return batch_frame(cid, seq, (f"{cid}-{seq}-{i:03d} " + "x" * 150 for i in range(n)))


def _lines(cid: str, seqs: range, n: int = 40) -> list[str]:
    return [f"{cid}-{seq}-{i:03d} " + "x" * 150 for seq in seqs for i in range(n)]


def _send_acked(address: str, cid: str, seqs: range) -> None:
    """Send batches as HubHandler does (each waits for its ack)."""
    with open_raw(address) as conn:
        for seq in seqs:
            conn.sendall(_batch(cid, seq))
            assert frames.unpack(frames.read_payload(conn, frames.DEFAULT_MAX_FRAME)) == {"t": "ack", "seq": seq}


def _send_into_crash(proc: subprocess.Popen[str], address: str, cid: str, seq: int) -> None:
    """Send the batch that kills the hub; its ack never comes."""
    with open_raw(address) as conn:
        conn.sendall(_batch(cid, seq))
        assert proc.wait(60) == -signal.SIGKILL, proc.communicate()[1]


def _serve(
    tmp_path: Path, log_path: Path, env: dict[str, str], handler_class: str, crash: str | None = None
) -> tuple[subprocess.Popen[str], str]:
    config = tmp_path / "hub.json"
    if not config.exists():
        config.write_text(json.dumps(hub_config(log_path, handler_class)))
    run_env = dict(env)
    run_env.pop(ENV_CRASH, None)
    if crash is not None:
        run_env[ENV_CRASH] = crash
    return serve(tmp_path, log_path, run_env)


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_a_batch_written_when_the_hub_is_killed_before_its_watermark_is_written_once_after_restart(
    tmp_path: Path, subprocess_env: dict[str, str], handler_class: str
) -> None:
    log_path = tmp_path / "hub.log"
    proc, address = _serve(tmp_path, log_path, subprocess_env, handler_class, crash="after_write:2")
    _send_acked(address, "c", range(1))
    _send_into_crash(proc, address, "c", 1)  # written whole, no watermark entry yet, never acked
    proc, address = _serve(tmp_path, log_path, subprocess_env, handler_class)
    try:
        _send_acked(address, "c", range(1, 3))  # the client resends batch 1, then goes on
        status = query_status(address)
    finally:
        stop_serve(proc)
    assert log_path.read_text().splitlines() == _lines("c", range(3))
    assert status["batches_rolled_back"] == 1, status


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_a_batch_cut_short_by_a_kill_mid_write_leaves_no_torn_line_and_no_duplicate(
    tmp_path: Path, subprocess_env: dict[str, str], handler_class: str
) -> None:
    log_path = tmp_path / "hub.log"
    proc, address = _serve(tmp_path, log_path, subprocess_env, handler_class, crash="mid_write:2")
    _send_acked(address, "c", range(1))
    _send_into_crash(proc, address, "c", 1)  # half of batch 1 on disk, cut inside a record
    assert len(log_path.read_bytes()) > len("\n".join(_lines("c", range(1))))
    proc, address = _serve(tmp_path, log_path, subprocess_env, handler_class)
    try:
        _send_acked(address, "c", range(1, 3))
        status = query_status(address)
    finally:
        stop_serve(proc)
    assert log_path.read_text().splitlines() == _lines("c", range(3))
    assert status["batches_rolled_back"] == 1, status


def test_a_watermark_entry_cut_short_by_a_kill_does_not_hide_the_entries_written_after_it(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    log_path = tmp_path / "hub.log"
    handler_class = HANDLERS[0]
    proc, address = _serve(tmp_path, log_path, subprocess_env, handler_class, crash="mid_watermark:1")
    _send_into_crash(proc, address, "c", 0)  # batch 0 written, half of its watermark entry
    # The second hub appends its entries after the torn one; it is killed after recording batch 1, before acking.
    proc, address = _serve(tmp_path, log_path, subprocess_env, handler_class, crash="after_watermark:2")
    _send_acked(address, "c", range(1))
    _send_into_crash(proc, address, "c", 1)
    proc, address = _serve(tmp_path, log_path, subprocess_env, handler_class)
    try:
        _send_acked(address, "c", range(1, 3))  # batch 1 again: the third hub must know it was written
        status = query_status(address)
    finally:
        stop_serve(proc)
    assert log_path.read_text().splitlines() == _lines("c", range(3))
    assert status["duplicate_batches"] == 1, status


def test_a_bad_crash_point_is_a_clear_start_up_error(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    config = tmp_path / "hub.json"
    config.write_text(json.dumps(hub_config(tmp_path / "hub.log")))
    env = dict(subprocess_env, **{ENV_CRASH: "somewhere:1"})
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "flocklog.cli", "serve", "--config", str(config), "--unix", str(tmp_path / "h.sock")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0 and ENV_CRASH in result.stderr, result.stderr


@pytest.mark.parametrize("point", ["mid_begin", "mid_write", "after_write", "mid_watermark", "after_watermark"])
def test_a_kill_at_any_point_of_a_batch_then_the_clients_resend_writes_every_record_once(
    tmp_path: Path, subprocess_env: dict[str, str], point: str
) -> None:
    log_path = tmp_path / "hub.log"
    proc, address = _serve(tmp_path, log_path, subprocess_env, HANDLERS[0], crash=f"{point}:3")
    _send_acked(address, "c", range(2))
    _send_into_crash(proc, address, "c", 2)
    proc, address = _serve(tmp_path, log_path, subprocess_env, HANDLERS[0])
    try:
        _send_acked(address, "c", range(2, 4))
    finally:
        stop_serve(proc)
    assert log_path.read_text().splitlines() == _lines("c", range(4))
