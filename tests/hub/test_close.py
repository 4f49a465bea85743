"""HubHandler after close(): it takes records again while the process runs (as the stdlib's handlers do), and
spools them once the process is exiting, so nothing is lost either way."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from flocklog.hub import frames, start_hub
from flocklog.hub.client import HubHandler


def _messages(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_a_handler_closed_by_a_later_dict_config_keeps_delivering(tmp_path: Path) -> None:
    # A non-incremental dictConfig closes every handler it finds and leaves a closed one on the root logger when
    # its config names no root: the handler must not spool everything from then on.
    log_path = tmp_path / "hub.log"
    file_handler = logging.FileHandler(log_path)
    with start_hub([file_handler]) as hub:
        handler = HubHandler(hub.address, spool_dir=tmp_path / "spool")
        handler.setFormatter(logging.Formatter("%(message)s"))
        log = logging.getLogger("test.hub.reopen")
        log.propagate = False
        log.addHandler(handler)
        try:
            log.warning("before close")
            handler.close()
            log.warning("after close")
            assert handler.drain(10)
            stats = handler.stats()
        finally:
            log.removeHandler(handler)
            handler.close()
    file_handler.close()
    assert _messages(log_path) == ["before close", "after close"]
    assert stats["reopened"] == 1 and stats["spooled"] == 0 and stats["sent"] == 2


def test_a_record_logged_while_the_process_exits_is_spooled_and_replayed_later(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    log_path = tmp_path / "hub.log"
    spool = tmp_path / "spool"
    file_handler = logging.FileHandler(log_path)
    script = textwrap.dedent(
        f"""
        import atexit, logging
        from flocklog.hub.client import HubHandler

        handler = HubHandler({{address!r}}, spool_dir={str(spool)!r})
        handler.setFormatter(logging.Formatter("%(message)s"))
        log = logging.getLogger("job")
        log.addHandler(handler)
        log.warning("while running")
        # atexit hooks run after flocklog's exit drain: this record finds the handler closed for good
        atexit.register(lambda: log.warning("during exit"))
        """
    )
    with start_hub([file_handler]) as hub:
        result = subprocess.run(
            [sys.executable, "-c", script.format(address=hub.address)],
            env=subprocess_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        assert _messages(log_path) == ["while running"]
        assert list(spool.glob("*.spool")), "the late record waits in the spool"
        adopter = HubHandler(hub.address, spool_dir=spool)  # the next client in that spool adopts the dead pid's
        adopter.handle(logging.makeLogRecord({"msg": "next run", "levelno": logging.WARNING}))
        assert adopter.drain(10)
        adopter.close()
    file_handler.close()
    assert _messages(log_path) == ["while running", "during exit", "next run"]


def _spooled_messages(spool: Path) -> list[str]:
    """Messages waiting in spool files: each a run of (header, msgpack batch) frames."""
    found: list[str] = []
    for path in sorted(spool.glob("*.spool")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (size,) = frames.HEADER.unpack_from(data, pos)
            pos += frames.HEADER.size
            batch = frames.unpack(data[pos : pos + size])
            pos += size
            found += [frames.decode_record(rec)["msg"] for rec in batch["recs"]]
    return found


def test_threads_logging_through_repeated_closes_lose_and_double_nothing(tmp_path: Path) -> None:
    log_path = tmp_path / "hub.log"
    spool = tmp_path / "spool"
    file_handler = logging.FileHandler(log_path)
    with start_hub([file_handler]) as hub:
        handler = HubHandler(hub.address, spool_dir=spool, when_full="block")
        handler.setFormatter(logging.Formatter("%(message)s"))
        done = threading.Event()
        counts = [0] * 4

        def keep_logging(slot: int) -> None:
            while not done.is_set():
                handler.handle(logging.makeLogRecord({"msg": f"t{slot}-{counts[slot]}", "levelno": logging.INFO}))
                counts[slot] += 1

        threads = [threading.Thread(target=keep_logging, args=(slot,)) for slot in range(4)]
        for thread in threads:
            thread.start()
        try:
            for _ in range(20):  # what a dictConfig applied over and over would do
                time.sleep(0.02)
                handler.close()
        finally:
            done.set()
            for thread in threads:
                thread.join()
        handler.close()
        stats = handler.stats()
    file_handler.close()
    expected = {f"t{slot}-{i}" for slot in range(4) for i in range(counts[slot])}
    delivered = _messages(log_path)
    spooled = _spooled_messages(spool)
    assert len(delivered) == len(set(delivered)), "a record was delivered twice"
    assert set(delivered).isdisjoint(spooled), "a record is both delivered and still spooled"
    assert set(delivered) | set(spooled) == expected and len(delivered) + len(spooled) == len(expected)
    assert stats["reopened"] >= 10 and stats["dropped_spool_error"] == stats["dropped_full"] == 0, stats
