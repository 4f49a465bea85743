"""The hub's connections under load: many idle peers, silent peers, a connection cap and a flood of huge frames.

The hub serves every connection from one selector thread, so its thread count stays flat however many peers
connect; its memory stays near its byte bound because it stops reading instead of queuing without limit.
"""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

import pytest
from hubwriters import last_json, run_script, serve, stop_serve, wait_until

from flocklog.errors import ConfigError, HubError
from flocklog.hub import frames, query_status
from flocklog.hub._address import parse_address


def _open(address: str, *, greet: bool = True) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(parse_address(address).path)
    sock.settimeout(60)
    if greet:
        frames.read_payload(sock, frames.DEFAULT_MAX_FRAME)
    return sock


def _proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


WRITER = """
import json, logging, sys
from flocklog import HubHandler
handler = HubHandler(when_full="block", drain_timeout=60)
handler.setFormatter(logging.Formatter("%(message)s"))
for i in range(int(sys.argv[1])):
    handler.handle(logging.makeLogRecord({"msg": f"rec {i}", "levelno": 20}))
print(json.dumps({"drained": handler.drain(60), **handler.stats()}))
handler.close()
"""


def test_six_hundred_idle_connections_keep_the_hub_thread_count_flat_and_it_still_writes(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    log_path = tmp_path / "hub.log"
    proc, address = serve(tmp_path, log_path, subprocess_env)
    idle: list[socket.socket] = []
    try:
        threads_before = _proc_status(proc.pid, "Threads")
        for _ in range(600):
            idle.append(_open(address))
        wait_until(lambda: query_status(address)["clients"] >= 601, 60, "600 idle clients")
        assert _proc_status(proc.pid, "Threads") <= threads_before + 2, "a thread per connection"
        env = dict(subprocess_env, FLOCKLOG_HUB_ADDRESS=address, FLOCKLOG_HUB_SPOOL_DIR=str(tmp_path / "spool"))
        stats = last_json(run_script(WRITER, env, "500").stdout)
        assert stats["drained"] and stats["sent"] == 500, stats
        assert query_status(address)["running"]
    finally:
        for sock in idle:
            sock.close()
        stop_serve(proc)
    assert sum(line.startswith("rec ") for line in log_path.read_text().splitlines()) == 500


def test_connections_that_never_send_a_frame_are_closed_after_the_handshake_timeout(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    proc, address = serve(tmp_path, tmp_path / "hub.log", subprocess_env, "--handshake-timeout", "1")
    silent = [_open(address, greet=False) for _ in range(50)]
    try:
        for sock in silent:  # the hello, then the close: recv returns b"" once the hub gave up on it
            frames.read_payload(sock, frames.DEFAULT_MAX_FRAME)
            assert sock.recv(1) == b""
        status = query_status(address)
        assert status["handshake_timeouts"] >= 50 and status["clients"] == 1, status
    finally:
        for sock in silent:
            sock.close()
        stop_serve(proc)


def test_connections_beyond_the_cap_are_refused_and_counted_and_the_hub_goes_on(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    proc, address = serve(tmp_path, tmp_path / "hub.log", subprocess_env, "--max-connections", "10")
    opened = [_open(address, greet=False) for _ in range(30)]
    try:
        refused = 0
        for sock in opened:
            try:
                frames.read_payload(sock, frames.DEFAULT_MAX_FRAME)
            except (ConnectionError, OSError):
                refused += 1
        assert refused == 20
    finally:
        for sock in opened:
            sock.close()
    refused_queries = 0

    def refusals_counted() -> bool:
        # Until the hub has seen the 10 closes, a status query is itself over the cap: refused, and counted.
        nonlocal refused_queries
        try:
            return bool(query_status(address)["connections_refused"] == 20 + refused_queries)
        except HubError:
            refused_queries += 1
            return False

    try:
        wait_until(refusals_counted, 60, "20 refusals counted (plus any status query refused meanwhile)")
    finally:
        stop_serve(proc)


def _tiny_records_frame(cid: str, seq: int, size: int) -> bytes:
    record, _ = frames.encode_record(frames.record_to_fields(logging.makeLogRecord({"msg": "t"}), "t"), 4096)
    recs = [record] * (size // (len(record) + 2))
    body = frames.pack({"t": "b", "cid": cid, "seq": seq, "recs": recs, "st": [0, 0]})
    return frames.HEADER.pack(len(body)) + body


def test_a_flood_of_huge_frames_of_tiny_records_stays_near_the_memory_bound(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    bound = 16 * 1024 * 1024
    proc, address = serve(tmp_path, tmp_path / "hub.log", subprocess_env, "--max-memory", str(bound))
    sent: list[int] = []  # records per connection (a record's size, so the count, depends on the thread)
    baseline = _proc_status(proc.pid, "VmRSS") * 1024
    errors: list[BaseException] = []

    def flood(n: int) -> None:
        try:
            sock = _open(address)
            with sock:
                for seq in range(8):
                    frame = _tiny_records_frame(f"flood{n}", seq, frames.DEFAULT_MAX_FRAME - 4096)
                    sent.append(len(frames.unpack(frame[frames.HEADER.size :])["recs"]))
                    sock.sendall(frame)
                for _ in range(8):
                    assert frames.unpack(frames.read_payload(sock, frames.DEFAULT_MAX_FRAME))["t"] == "ack"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=flood, args=(n,)) for n in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        assert not errors, errors
        status = query_status(address)
        peak = _proc_status(proc.pid, "VmHWM") * 1024
    finally:
        stop_serve(proc)
    assert status["records_written"] == sum(sent) and len(sent) == 32, status
    assert status["memory_limit"] == bound
    # Loosely: the bound, one frame being decoded, and slack for the allocator (the benchmark gives the figure).
    assert peak - baseline < bound + 64 * 1024 * 1024, f"peak RSS {peak / 2**20:.0f} MiB over a {baseline / 2**20:.0f}"


def test_under_a_flood_the_hub_counts_decoded_records_stays_within_its_bound_and_still_answers_status(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """The writer is held inside its first batch (its log file is a FIFO nobody reads yet), so the hub must pause.

    While paused, ``status`` answers (it used to wait for the pause to end) and shows memory in use that counts the
    decoded batch, not only frame bytes, and stays within the bound (it used to stop reading only past it).
    """
    import json
    import os

    log_path = tmp_path / "hub.log"
    os.mkfifo(log_path)
    handler = {"class": "logging.FileHandler", "filename": str(log_path), "delay": True}
    config = {"version": 1, "handlers": {"file": handler}, "root": {"level": "DEBUG", "handlers": ["file"]}}
    (tmp_path / "hub.json").write_text(json.dumps(config))
    bound = 10 * 1024 * 1024  # near the smallest a 1 MiB frame allows (8.4 MiB), so the flood pauses early
    proc, address = serve(tmp_path, log_path, subprocess_env, "--max-memory", str(bound))
    frame_count = 12
    first = _tiny_records_frame("flood", 0, frames.DEFAULT_MAX_FRAME - 4096)
    sent: list[int] = []  # records per frame (a record's size, so the count, depends on the thread)
    errors: list[BaseException] = []
    lines: list[int] = []

    def flood() -> None:
        try:
            with _open(address) as sock:
                sock.settimeout(300)
                for seq in range(frame_count):
                    frame = _tiny_records_frame("flood", seq, frames.DEFAULT_MAX_FRAME - 4096)
                    sent.append(len(frames.unpack(frame[frames.HEADER.size :])["recs"]))
                    sock.sendall(frame)
                for _ in range(frame_count):
                    assert frames.unpack(frames.read_payload(sock, frames.DEFAULT_MAX_FRAME))["t"] == "ack"
        except BaseException as exc:
            errors.append(exc)

    def drain_fifo() -> None:
        with open(log_path, "rb") as fifo:
            lines.append(sum(chunk.count(b"\n") for chunk in iter(lambda: fifo.read(1 << 16), b"")))

    sender = threading.Thread(target=flood)
    reader = threading.Thread(target=drain_fifo)
    try:
        sender.start()
        wait_until(lambda: query_status(address, timeout=30)["read_pauses"] >= 1, 120, "the hub to pause reading")
        status = query_status(address, timeout=30)  # answered while paused
        assert status["read_pauses"] >= 1 and status["records_written"] == 0, status
        assert 0 < status["memory_in_use"] < status["memory_limit"] == bound, status
        assert status["memory_in_use"] == (
            status["memory_frames"] + status["memory_decoded"] + status["memory_buffers"]
        ), status
        # the batch held in the writer is counted as decoded objects: well over its frame's own bytes
        assert status["memory_decoded"] >= 2 * len(first), status
        reader.start()
        sender.join(300)
        assert not errors, errors
    finally:
        if not reader.is_alive() and not lines:
            reader.start()  # never leave serve blocked on the FIFO
        stop_serve(proc)
        reader.join(60)
    assert lines == [sum(sent)] and len(sent) == frame_count


@pytest.mark.parametrize("max_frame", [8192, 65536, 262144, 1024 * 1024])
def test_a_memory_bound_under_which_a_paused_hub_could_never_read_again_is_refused_at_start(
    tmp_path: Path, max_frame: int
) -> None:
    """The old check accepted ``2 * max_frame + reserve``; the loop's floor (the reserve plus a sixteenth of the
    bound) then sat above the resume level (3/4 of the bound) for frames up to 256 KiB: paused from the start."""
    from flocklog.hub._writer import writer_reserve
    from flocklog.hub.server import Hub

    old_minimum = 2 * max_frame + writer_reserve(max_frame)
    handler = logging.FileHandler(tmp_path / "hub.log", delay=True)
    with pytest.raises(ConfigError, match="must be at least"):
        Hub([handler], addresses=[f"unix:{tmp_path / 'a.sock'}"], max_frame=max_frame, max_memory=old_minimum)
    from flocklog.hub.server import minimum_max_memory

    floor = writer_reserve(max_frame) + minimum_max_memory(max_frame) // 16 + 2 * max_frame
    assert floor < minimum_max_memory(max_frame) * 3 // 4, "at the minimum a paused hub must be able to resume"
