"""The stdout sink: ``flocklog serve`` writing JSON lines under a reader, a stalled reader, a restarted sink."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sinkhelpers import LineReader, check_exactly_once, finish, start_serve, start_writers, wait_for, write_config

from flocklog.hub.sinks import StdoutHandler, sink_stats, stdout_config
from flocklog.stamps import format_stamp

pytestmark = pytest.mark.slow


def test_serve_stdout_delivers_every_writer_record_exactly_once(
    tmp_path: Path, subprocess_env: dict[str, str], run_id: str
) -> None:
    config = write_config(
        tmp_path, {"stdout": {"class": "flocklog.hub.sinks.StdoutHandler", "spool_dir": str(tmp_path / "sink")}}
    )
    sock = tmp_path / "hub.sock"
    hub = start_serve(config, sock, subprocess_env)
    reader = LineReader(hub.stdout)
    try:
        writers = start_writers(f"unix:{sock}", subprocess_env, tmp_path / "spool", run_id, n=4, count=2000)
        pids = {f"w{i}": p.pid for i, p in enumerate(writers)}
        counts = finish(writers)
        assert counts == [2000] * 4
        wait_for(lambda: reader.count(run_id) >= 8000, 120, "8000 JSON lines on the hub's stdout")
    finally:
        hub.send_signal(signal.SIGTERM)
        _, err = hub.communicate(timeout=60)
    reader.join(30)
    assert hub.returncode == 0, err
    lines = [json.loads(line) for line in reader.snapshot()]
    check_exactly_once((obj["message"] for obj in lines), run=run_id, writers={w: 2000 for w in pids})
    for obj in lines:
        writer = obj["message"].split()[2]
        assert obj["pid"] == pids[writer]
        assert obj["logger"] == f"flocklog.stamps.{writer}"
        assert obj["level"] == "INFO" and obj["time"].endswith("Z")
    assert "stdout" not in err or "records remain spooled" not in err


def test_serve_dash_dash_stdout_needs_no_config_file(
    tmp_path: Path, subprocess_env: dict[str, str], run_id: str
) -> None:
    """``flocklog serve --stdout``: the integration of ``stdout_config()`` into the CLI (skips until it is wired)."""
    helptext = subprocess.run(
        [sys.executable, "-m", "flocklog.cli", "serve", "--help"], env=subprocess_env, capture_output=True, text=True
    ).stdout
    if "--stdout" not in helptext:
        pytest.skip("flocklog serve has no --stdout option yet: wire flocklog.hub.sinks.stdout_config into it")
    sock = tmp_path / "hub.sock"
    hub = start_serve(None, sock, subprocess_env, "--stdout")
    reader = LineReader(hub.stdout)
    try:
        writers = start_writers(f"unix:{sock}", subprocess_env, tmp_path / "spool", run_id, n=2, count=1000)
        assert finish(writers) == [1000, 1000]
        wait_for(lambda: reader.count(run_id) >= 2000, 120, "2000 JSON lines on the hub's stdout")
    finally:
        hub.send_signal(signal.SIGTERM)
        _, err = hub.communicate(timeout=60)
    reader.join(30)
    assert hub.returncode == 0, err
    messages = [json.loads(line)["message"] for line in reader.snapshot()]
    check_exactly_once(messages, run=run_id, writers={"w0": 1000, "w1": 1000})


def _stamped_record(run: str, seq: int, **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "app", "levelno": logging.INFO, "levelname": "INFO", **extra})
    record.msg = format_stamp(run, "w0", seq, record.created)
    return record


def test_a_stalled_reader_never_blocks_emit_and_loses_nothing(tmp_path: Path, run_id: str) -> None:
    read_fd, write_fd = os.pipe()
    stream = os.fdopen(write_fd, "w", encoding="utf-8")
    handler = StdoutHandler(stream=stream, queue_size=50, batch_size=20, spool_dir=str(tmp_path / "spool"))
    total = 5000
    emitted = threading.Event()

    def emit_all() -> None:  # nobody reads yet: a 64 KiB pipe holds a few hundred lines
        for seq in range(total):
            handler.handle(_stamped_record(run_id, seq, user="ann\nsmith"))
        emitted.set()

    threading.Thread(target=emit_all, daemon=True).start()
    assert emitted.wait(120), "emit blocked behind a stalled reader"
    assert handler.stats()["spooled_total"] > 0
    reader = LineReader(os.fdopen(read_fd, encoding="utf-8"))
    wait_for(lambda: reader.count(run_id) >= total, 120, "every line once the reader drains the pipe")
    handler.close()
    stream.close()
    reader.join(30)
    lines = [json.loads(line) for line in reader.snapshot()]
    assert all(obj["user"] == "ann\nsmith" for obj in lines)
    check_exactly_once((obj["message"] for obj in lines), run=run_id, writers={"w0": total})
    stats = sink_stats([handler])["StdoutHandler#0"]
    assert (stats["sent"], stats["dropped"], stats["queued"], stats["spooled"]) == (total, 0, 0, 0), stats


def test_what_a_dead_reader_missed_is_spooled_and_resent_by_the_next_sink(tmp_path: Path, run_id: str) -> None:
    spool = str(tmp_path / "spool")
    read_fd, write_fd = os.pipe()
    os.close(read_fd)  # the reader is gone: every write fails with EPIPE
    dead = os.fdopen(write_fd, "w", encoding="utf-8")
    first = StdoutHandler(stream=dead, spool_dir=spool, retry_interval=0.05, max_retry_interval=0.1, drain_timeout=1)
    for seq in range(300):
        first.handle(_stamped_record(run_id, seq))
    first.close()
    stats = first.stats()
    assert stats["sent"] == 0 and stats["dropped"] == 0 and stats["spooled"] == 300, stats
    assert stats["failures"] >= 1
    with contextlib.suppress(OSError):  # flushing into the closed pipe fails once more
        dead.close()

    read_fd, write_fd = os.pipe()
    alive = os.fdopen(write_fd, "w", encoding="utf-8")
    reader = LineReader(os.fdopen(read_fd, encoding="utf-8"))
    second = StdoutHandler(stream=alive, spool_dir=spool)  # a restarted hub: nothing new is logged
    wait_for(lambda: reader.count(run_id) >= 300, 60, "the spooled records on the new sink's stream")
    second.close()
    alive.close()
    reader.join(30)
    check_exactly_once((json.loads(line)["message"] for line in reader.snapshot()), run=run_id, writers={"w0": 300})
    assert second.stats()["replayed"] == 300
    assert not [n for n in os.listdir(spool) if n.endswith(".jsonl")]


def test_stdout_config_adds_the_sink_to_a_config_or_makes_one() -> None:
    alone = stdout_config()
    assert alone["handlers"]["stdout"]["class"] == "flocklog.hub.sinks.StdoutHandler"
    assert alone["root"]["handlers"] == ["stdout"]
    base = {"version": 1, "handlers": {"file": {"class": "logging.NullHandler"}}, "root": {"handlers": ["file"]}}
    both = stdout_config(base)
    assert both["root"]["handlers"] == ["file", "stdout"]
    assert base["root"]["handlers"] == ["file"]  # the caller's dict is not changed
