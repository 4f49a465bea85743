"""The hub and its clients against poison records, peers that never read, full disks, hung or fake hubs and unsafe
spool directories: no record stuck, none lost without a counter, and no peer can stop or impersonate the hub."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import threading
from pathlib import Path

import pytest
from hubwriters import last_json, run_script, serve, stop_serve, wait_until

from flocklog.hub import frames, query_status, start_hub
from flocklog.hub._address import parse_address

SPOOL_MAGIC, SPOOL_HEADER_SIZE = b"FLSPOOL1", 16  # a spool file's magic, then its 8-byte replay offset

POISON_WRITER = """
import json, logging, sys
from flocklog import HubHandler
handler = HubHandler(drain_timeout=float(sys.argv[2]), retry_interval=0.1, when_full="block")
handler.setFormatter(logging.Formatter("%(message)s"))
tag = sys.argv[1]
for created in (float("nan"), float("inf"), float("-inf")):
    handler.handle(logging.makeLogRecord({"msg": f"{tag} poison {created}", "created": created, "levelno": 20}))
for i in range(100):
    handler.handle(logging.makeLogRecord({"msg": f"{tag} good {i}", "levelno": 20}))
handler.drain()
print(json.dumps(handler.stats()))
handler.close()
"""


def test_nan_and_infinite_created_are_repaired_counted_and_written_live_and_from_a_spool(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    log_path, spool, sock = tmp_path / "hub.log", tmp_path / "spool", tmp_path / "hub.sock"
    env = dict(subprocess_env, FLOCKLOG_HUB_ADDRESS=f"unix:{sock}", FLOCKLOG_HUB_SPOOL_DIR=str(spool))
    # no hub yet: the poison is spooled by a process that then exits
    assert last_json(run_script(POISON_WRITER, env, "spooled", "0.3").stdout)["spooled"] == 103
    proc, address = serve(tmp_path, log_path, env, "--no-adopt-spools")  # the client, not serve, adopts here
    try:
        # a live client; it also adopts and replays the dead writer's poisoned spool
        stats = last_json(run_script(POISON_WRITER, env, "live", "30").stdout)
        assert stats["adopted_spools"] == 1 and stats["replayed"] == 103, stats
        wait_until(lambda: query_status(address)["records_written"] >= 206, 60, "all 206 records written")
        status = query_status(address)
        assert status["running"] and status["records_repaired"] == 6 and status["records_skipped"] == 0, status
    finally:
        err = stop_serve(proc)
    text = log_path.read_text()
    for tag in ("spooled", "live"):
        assert sum(f"{tag} good" in line for line in text.splitlines()) == 100
        assert sum(f"{tag} poison" in line for line in text.splitlines()) == 3
    assert "206 records written" in err


def _batch_frame(cid: str, seq: int, text: str) -> bytes:
    record, _ = frames.encode_record(frames.record_to_fields(logging.makeLogRecord({"msg": text}), text), 4096)
    body = frames.pack({"t": "b", "cid": cid, "seq": seq, "recs": [record], "st": [0, 0]})
    return frames.HEADER.pack(len(body)) + body


def _connect_raw(address: str) -> socket.socket:
    addr = parse_address(address)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(addr.path)
    sock.settimeout(30)
    frames.read_payload(sock, frames.DEFAULT_MAX_FRAME)  # the hello
    return sock


GOOD_WRITER = """
import json, logging, sys
from flocklog import HubHandler
handler = HubHandler(when_full="block", drain_timeout=60)
handler.setFormatter(logging.Formatter("%(message)s"))
for i in range(int(sys.argv[1])):
    handler.handle(logging.makeLogRecord({"msg": f"good {i}", "levelno": 20}))
print(json.dumps({"drained": handler.drain(60), **handler.stats()}))
handler.close()
"""


def test_a_peer_that_requests_status_and_never_reads_cannot_stall_the_writer(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    log_path = tmp_path / "hub.log"
    proc, address = serve(tmp_path, log_path, subprocess_env)
    env = dict(subprocess_env, FLOCKLOG_HUB_ADDRESS=address, FLOCKLOG_HUB_SPOOL_DIR=str(tmp_path / "spool"))
    status_frame = frames.seal(frames.pack({"t": "status"}), secret=None, nonce=b"", direction=b"", counter=0)
    attacker = _connect_raw(address)

    def attack() -> None:
        try:  # batches (the writer must ack them) between status requests, and never a read
            for i in range(5000):
                attacker.sendall(_batch_frame("rude", i, f"rude {i}") + status_frame * 4)
        except OSError:
            pass  # cut off by the hub (or blocked until the timeout): either way, it stops here

    thread = threading.Thread(target=attack, daemon=True)
    thread.start()
    try:
        wait_until(lambda: query_status(address)["status_requests"] > 200, 60, "the attacker's status requests")
        result = last_json(run_script(GOOD_WRITER, env, "1000").stdout)
        assert result["drained"] and result["sent"] == 1000 and result["spooled"] == 0, result
        status = query_status(address)
        assert status["running"] and status["slow_peers_closed"] >= 1, status
    finally:
        attacker.close()
        thread.join(60)
        stop_serve(proc)
    lines = log_path.read_text().splitlines()
    assert sum(line.startswith("good ") for line in lines) == 1000


FULL_DISK_WRITER = """
import json, logging, sys, threading, time
from flocklog import HubHandler
handler = HubHandler(sys.argv[1], spool_dir=sys.argv[2], when_full="block", retry_interval=0.1, drain_timeout=60)
handler.setFormatter(logging.Formatter("%(message)s"))
pad = "x" * 1000
for i in range(3000):
    handler.handle(logging.makeLogRecord({"msg": f"before {i} {pad}", "levelno": 20}))
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    st = handler.stats()
    if st["spooled"] + st["dropped_spool_error"] == 3000:
        break
    time.sleep(0.05)
print(json.dumps({"alive": handler._thread.is_alive(), **handler.stats()}), flush=True)
sys.stdin.readline()  # the test starts the hub now
for i in range(100):
    handler.handle(logging.makeLogRecord({"msg": f"after {i}", "levelno": 20}))
drained = handler.drain(60)
handler.close()
print(json.dumps({"drained": drained, **handler.stats()}), flush=True)
"""


def _frames_are_whole(path: Path) -> int:
    data = path.read_bytes()
    pos = SPOOL_HEADER_SIZE if data.startswith(SPOOL_MAGIC) else 0
    count = 0
    while pos < len(data):
        assert pos + frames.HEADER.size <= len(data), f"a partial frame header at {pos} in {path}"
        (size,) = frames.HEADER.unpack_from(data, pos)
        pos += frames.HEADER.size + size
        assert pos <= len(data), f"a partial frame at the end of {path}"
        count += 1
    return count


def test_a_full_spool_disk_counts_drops_keeps_whole_frames_and_the_sender_resumes(
    tmp_path: Path, small_fs: Path, subprocess_env: dict[str, str]
) -> None:
    import subprocess
    import sys

    sock, log_path = tmp_path / "hub.sock", tmp_path / "hub.log"
    spool = small_fs / "spool"  # the tmpfs root is world-writable (1777): a spool directory must not be
    proc = subprocess.Popen(
        [sys.executable, "-c", FULL_DISK_WRITER, f"unix:{sock}", str(spool)],
        env=subprocess_env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    full = json.loads(proc.stdout.readline())
    assert full["alive"], full
    assert full["dropped_spool_error"] > 0 and full["spooled"] > 0, full
    assert full["spooled"] + full["dropped_spool_error"] == 3000, full
    spools = list(spool.glob("*.spool"))
    assert sum(_frames_are_whole(p) for p in spools) > 0
    file_handler = logging.FileHandler(log_path)
    hub = start_hub([file_handler], address=f"unix:{sock}")
    try:
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=120)
    finally:
        hub.stop()
        file_handler.close()
    assert proc.returncode == 0, err  # close() never raises into the application
    final = json.loads(out.strip().splitlines()[-1])
    assert final["drained"] and final["sent"] + final["replayed"] == full["spooled"] + 100, final
    assert final["dropped_spool_error"] == full["dropped_spool_error"], final
    lines = log_path.read_text().splitlines()
    assert sum(line.startswith("after ") for line in lines) == 100
    assert sum(line.startswith("before ") for line in lines) == full["spooled"]
    assert not list(spool.glob("*.spool"))


HUNG_HUB_WRITER = """
import json, logging, sys, time
from flocklog import HubHandler
handler = HubHandler(sys.argv[1], spool_dir=sys.argv[2], capacity=2000, drain_timeout=0.5, retry_interval=0.1)
handler.setFormatter(logging.Formatter("%(message)s"))
for i in range(20000):
    handler.handle(logging.makeLogRecord({"msg": f"r{i}", "levelno": 20}))
    if i % 10 == 0:
        time.sleep(0.002)
deadline = time.monotonic() + 60
while handler.stats()["buffered"] and time.monotonic() < deadline:
    time.sleep(0.05)
handler.close()
print(json.dumps(handler.stats()))
"""


def test_a_hub_that_accepts_and_never_greets_makes_the_client_spool_instead_of_drop(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    sock_path = tmp_path / "hung.sock"
    hung = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hung.bind(str(sock_path))
    hung.listen(4096)  # connections complete in the backlog; nobody ever greets them
    try:
        result = run_script(HUNG_HUB_WRITER, subprocess_env, f"unix:{sock_path}", str(tmp_path / "spool"))
    finally:
        hung.close()
    stats = last_json(result.stdout)
    assert stats["dropped_full"] == 0, stats
    assert stats["spooled"] == 20000 and stats["sent"] == 0, stats


SIZE_WRITER = """
import json, logging, sys
from flocklog import HubHandler
handler = HubHandler(when_full="block", drain_timeout=60)
handler.setFormatter(logging.Formatter("%(message)s"))
pad = "y" * 2000
for i in range(3000):
    handler.handle(logging.makeLogRecord({"msg": f"sized {i} {pad}", "levelno": 20}))
handler.handle(logging.makeLogRecord({"msg": "huge " + "z" * 200_000, "levelno": 20}))
handler.handle(logging.makeLogRecord({"msg": "last", "levelno": 20}))
print(json.dumps({"drained": handler.drain(60), **handler.stats()}))
handler.close()
"""


def test_batches_are_cut_to_the_hubs_advertised_frame_limit_and_a_huge_record_is_truncated(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    log_path = tmp_path / "hub.log"
    file_handler = logging.FileHandler(log_path)
    file_handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        with start_hub([file_handler], max_frame=65536) as hub:
            env = dict(subprocess_env, FLOCKLOG_HUB_ADDRESS=hub.address, FLOCKLOG_HUB_SPOOL_DIR=str(tmp_path / "spool"))
            stats = last_json(run_script(SIZE_WRITER, env).stdout)
            status = hub.status()
    finally:
        file_handler.close()
    assert stats["drained"] and stats["sent"] == 3002 and stats["spooled"] == 0, stats
    assert stats["truncated"] == 1, stats
    assert status["oversized"] == 0 and status["records_written"] == 3002, status
    lines = log_path.read_text().splitlines()
    assert sum(line.startswith("sized ") for line in lines) == 3000
    huge = [line for line in lines if line.startswith("huge ")]
    assert len(huge) == 1 and "[flocklog: truncated" in huge[0] and len(huge[0]) < 65536
    assert lines[-1] == "last"


def _fake_hub(listener: socket.socket, stop: threading.Event) -> None:
    """Greets with auth off and acks every batch, untagged: an impostor on the hub's address."""
    listener.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            hello = {"t": "hello", "v": 1, "nonce": b"0" * 16, "auth": False, "max": frames.DEFAULT_MAX_FRAME}
            try:
                conn.sendall(frames.seal(frames.pack(hello), secret=None, nonce=b"", direction=b"", counter=0))
                while True:
                    batch = frames.unpack(frames.read_payload(conn, frames.DEFAULT_MAX_FRAME))
                    conn.sendall(
                        frames.seal(
                            frames.pack({"t": "ack", "seq": batch.get("seq")}),
                            secret=None,
                            nonce=b"",
                            direction=b"",
                            counter=0,
                        )
                    )
            except (OSError, ConnectionError, Exception):
                continue


SECRET_WRITER = """
import json, logging, sys
from flocklog import HubHandler
handler = HubHandler(sys.argv[1], secret="s3cret", spool_dir=sys.argv[2], drain_timeout=1, retry_interval=0.1)
handler.setFormatter(logging.Formatter("%(message)s"))
for i in range(200):
    handler.handle(logging.makeLogRecord({"msg": f"secret {i}", "levelno": 20}))
handler.close()
print(json.dumps(handler.stats()))
"""


def test_a_client_with_a_secret_refuses_a_hub_that_does_not_authenticate(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    thread = threading.Thread(target=_fake_hub, args=(listener, stop), daemon=True)
    thread.start()
    spool = tmp_path / "spool"
    try:
        port = listener.getsockname()[1]
        result = run_script(SECRET_WRITER, subprocess_env, f"tcp://127.0.0.1:{port}", str(spool))
    finally:
        stop.set()
        listener.close()
        thread.join(10)
    stats = last_json(result.stdout)
    assert stats["sent"] == 0 and stats["spooled"] == 200, stats
    assert stats["auth_refused"] >= 1, stats
    assert "does not authenticate" in result.stderr
    assert list(spool.glob("*.spool")), "the records stay spooled for the real hub"


UNSAFE_DIR_WRITER = """
import json, logging, os, sys
from flocklog import HubHandler
handler = HubHandler(sys.argv[1], spool_dir=sys.argv[2], drain_timeout=float(sys.argv[3]), retry_interval=0.1)
handler.setFormatter(logging.Formatter("%(message)s"))
for i in range(50):
    handler.handle(logging.makeLogRecord({"msg": f"mine {i}", "levelno": 20}))
drained = handler.drain(float(sys.argv[3]))
spool = getattr(handler, "_spool", None)
directory = str(spool.known_dir() if spool is not None else handler.spool_dir)
handler.close()
print(json.dumps({"dir": directory, "drained": drained, **handler.stats()}))
"""


def _plant(directory: Path) -> None:
    """A spool file 'left by a dead process' of another user: a record the hub must never see."""
    record, _ = frames.encode_record(
        frames.record_to_fields(logging.makeLogRecord({"msg": "PLANTED"}), "PLANTED"), 4096
    )
    body = frames.pack({"t": "b", "cid": "planted", "seq": 0, "recs": [record], "st": [0, 0]})
    (directory / "999999-planted.spool").write_bytes(frames.HEADER.pack(len(body)) + body)


@pytest.mark.parametrize("unsafe", ["world-writable", "foreign-owner"])
def test_a_spool_directory_others_can_write_or_own_is_refused_for_a_private_one(
    tmp_path: Path, subprocess_env: dict[str, str], unsafe: str
) -> None:
    shared = tmp_path / "shared-spool"
    shared.mkdir()
    _plant(shared)
    if unsafe == "world-writable":
        os.chmod(shared, 0o777)
    else:
        if os.getuid() != 0:
            pytest.skip("changing a directory's owner needs root")
        os.chmod(shared, 0o700)
        os.chown(shared, 65534, 65534)
    log_path = tmp_path / "hub.log"
    file_handler = logging.FileHandler(log_path)
    try:
        with start_hub([file_handler]) as hub:
            live = run_script(UNSAFE_DIR_WRITER, subprocess_env, hub.address, str(shared), "30")
        down = run_script(UNSAFE_DIR_WRITER, subprocess_env, f"unix:{tmp_path / 'nohub.sock'}", str(shared), "0.3")
    finally:
        file_handler.close()
    assert "PLANTED" not in log_path.read_text(), "a record planted by another user was replayed"
    assert "refusing spool directory" in live.stderr and "refusing spool directory" in down.stderr, live.stderr
    assert last_json(live.stdout)["sent"] == 50
    stats = last_json(down.stdout)
    private = Path(stats["dir"])
    assert private != shared and stats["spooled"] == 50, stats
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o700
    files = list(private.glob(f"*-{stats['client_id']}-*.spool"))
    assert files and all(stat.S_IMODE(os.stat(p).st_mode) == 0o600 for p in files)
    assert sorted(p.name for p in shared.glob("*.spool")) == ["999999-planted.spool"]


def test_a_handler_whose_constructor_raises_leaves_logging_shutdown_working(subprocess_env: dict[str, str]) -> None:
    script = """
import logging
from flocklog import HubHandler
from flocklog.errors import ConfigError
kept = []
try:
    HubHandler("unix:/nonexistent/hub.sock", linger=5.0, retry_interval=0.5)
except ConfigError as exc:
    kept.append(exc)  # its traceback keeps the half-built handler alive, as a logged or re-raised error would
logging.shutdown()
print("ok")
"""
    result = run_script(script, subprocess_env)
    assert result.stdout.strip() == "ok" and "AttributeError" not in result.stderr, result.stderr
