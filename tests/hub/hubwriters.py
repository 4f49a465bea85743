"""Writer bodies for hub tests, importable by fork and spawn children alike."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from flocklog.errors import HubError
from flocklog.hub import frames, query_status
from flocklog.hub._address import parse_address
from flocklog.hub.client import HubHandler
from flocklog.stamps import stamped_logger, write_stamped
from flocklog.verify import Report, VerifyOptions, verify_paths

FORMAT = "%(asctime)s %(levelname)s [PID:%(process)d] %(message)s"


def make_handler(address: str, spool_dir: str, **kwargs: object) -> HubHandler:
    handler = HubHandler(address, spool_dir=spool_dir, when_full="block", **kwargs)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter(FORMAT))
    return handler


def stamped_writer(address: str, spool_dir: str, run: str, writer: str, count: int, pause: float = 0.0) -> int:
    """Log ``count`` stamped records through a HubHandler and close it (drain) before returning."""
    handler = make_handler(address, spool_dir)
    logger = stamped_logger(f"hubtest.{writer}", handler)
    written = write_stamped(logger, run=run, writer=writer, count=count, payload_size=32, pause=pause)
    handler.close()
    return written


def env_writer(run: str, writer: str, count: int) -> int:
    """A writer that knows nothing but ``FLOCKLOG_HUB_ADDRESS`` (and the spool dir from the environment)."""
    handler = HubHandler(when_full="block")
    handler.setFormatter(logging.Formatter(FORMAT))
    logger = stamped_logger(f"hubtest.{writer}", handler)
    written = write_stamped(logger, run=run, writer=writer, count=count, payload_size=32)
    handler.close()
    return written


def check(path: Path, *, run: str, writers: int, per_writer: int) -> Report:
    report = verify_paths(
        [str(path)], VerifyOptions(expect_per_writer=per_writer, writers=writers, run=run, allow_expired=False)
    )
    assert report.records == writers * per_writer, report.to_dict()
    assert (report.lost, report.duplicated, report.torn) == (0, 0, 0), report.to_dict()
    assert report.ok, report.to_dict()
    return report


def pid() -> int:
    return os.getpid()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds naming what was awaited."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def hub_config(log_path: Path, handler_class: str = "logging.FileHandler") -> dict[str, Any]:
    return {
        "version": 1,
        "handlers": {"file": {"class": handler_class, "filename": str(log_path)}},
        "root": {"level": "DEBUG", "handlers": ["file"]},
    }


def serve(
    tmp_path: Path, log_path: Path, env: dict[str, str], *args: str, sock: Path | None = None
) -> tuple[subprocess.Popen[str], str]:
    """``flocklog serve`` as its own process on a Unix socket; returns it once it answers status."""
    sock = sock or tmp_path / "hub.sock"
    config = tmp_path / "hub.json"
    if not config.exists():
        config.write_text(json.dumps(hub_config(log_path)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "flocklog.cli", "serve", "--config", str(config), "--unix", str(sock), *args],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    address = f"unix:{sock}"

    def up() -> bool:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            query_status(address, timeout=1.0)
        except HubError:
            return False
        return True

    wait_until(up, 60, "flocklog serve to answer")
    return proc, address


def stop_serve(proc: subprocess.Popen[str]) -> str:
    """SIGTERM, then the exit status must be 0; returns its stderr."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return err


def run_script(script: str, env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, result.stderr
    return result


def last_json(text: str) -> Any:
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


def batch_frame(cid: str, seq: int, texts: Iterable[str]) -> bytes:
    """A client's batch frame (header and body, no session MAC) of one record per text: for raw-socket tests."""
    recs = []
    for text in texts:
        record, _ = frames.encode_record(frames.record_to_fields(logging.makeLogRecord({"msg": text}), text), 4096)
        recs.append(record)
    body = frames.pack({"t": "b", "cid": cid, "seq": seq, "recs": recs, "st": [0, 0]})
    return frames.HEADER.pack(len(body)) + body


def open_raw(address: str) -> socket.socket:
    """A raw connection to an unauthenticated Unix-socket hub, its hello read."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(parse_address(address).path)
    sock.settimeout(60)
    frames.read_payload(sock, frames.DEFAULT_MAX_FRAME)  # the hello
    return sock


def read_reply(sock: socket.socket) -> dict[str, object]:
    """The hub's next reply on a raw connection."""
    reply: dict[str, object] = frames.unpack(frames.read_payload(sock, frames.DEFAULT_MAX_FRAME))
    return reply
