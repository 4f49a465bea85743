"""HubHandler.close() while other threads go on logging: it ends without waiting out its timeout, and every record
is delivered, spooled or counted as dropped, never lost and never both delivered and spooled."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from flocklog.hub import _spool, frames, start_hub
from flocklog.hub.client import HubHandler


def _spooled_messages(spool: Path) -> list[str]:
    """Messages waiting in spool files: each a run of (header, msgpack batch) frames."""
    found: list[str] = []
    for path in sorted(spool.glob("*.spool")):
        data = path.read_bytes()
        pos = _spool.HEADER_SIZE if data.startswith(_spool.MAGIC) else 0
        while pos < len(data):
            (size,) = frames.HEADER.unpack_from(data, pos)
            pos += frames.HEADER.size
            batch = frames.unpack(data[pos : pos + size])
            pos += size
            found += [frames.decode_record(rec)["msg"] for rec in batch["recs"]]
    return found


class SlowFileHandler(logging.FileHandler):
    """A hub-side writer slower than the writers: their buffer never runs empty while they log."""

    def emit(self, record: logging.LogRecord) -> None:
        time.sleep(0.0005)
        super().emit(record)


def test_close_under_a_steady_stream_ends_soon_and_accounts_for_every_record(tmp_path: Path) -> None:
    log_path = tmp_path / "hub.log"
    spool = tmp_path / "spool"
    file_handler = SlowFileHandler(log_path)
    with start_hub([file_handler]) as hub:
        # A long drain timeout: a close() that waited for the buffer to run empty would take all of it.
        handler = HubHandler(hub.address, spool_dir=spool, drain_timeout=30, capacity=500)
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
            time.sleep(0.5)
            started = time.monotonic()
            handler.close()
            took = time.monotonic() - started
            time.sleep(0.2)  # records logged after close() go to the spool
        finally:
            done.set()
            for thread in threads:
                thread.join()
        stats = handler.stats()
    file_handler.close()
    assert took < 15, f"close() took {took:.1f}s: it waited for a buffer that other threads kept filling"
    delivered = log_path.read_text().splitlines()
    spooled = _spooled_messages(spool)
    assert len(delivered) == len(set(delivered)), "a record was delivered twice"
    assert set(delivered).isdisjoint(spooled), "a record is both delivered and still spooled"
    assert len(delivered) + len(spooled) + stats["dropped_full"] == sum(counts), stats
    assert stats["dropped_spool_error"] == 0 and len(spooled) > 0, stats


def _child_logs(count: int) -> None:
    log = logging.getLogger("test.hub.forked")
    for i in range(count):
        log.warning("child-%d", i)


def test_a_handler_closed_before_a_fork_is_drained_when_the_child_exits(tmp_path: Path) -> None:
    # The child gets a fresh handler from the parent's closed one; multiprocessing children skip atexit, so only
    # flocklog's own exit drain sends what the child buffered, and it must know about that handler.
    import multiprocessing

    log_path = tmp_path / "hub.log"
    file_handler = logging.FileHandler(log_path)
    with start_hub([file_handler]) as hub:
        handler = HubHandler(hub.address, spool_dir=tmp_path / "spool", when_full="block")
        handler.setFormatter(logging.Formatter("%(message)s"))
        log = logging.getLogger("test.hub.forked")
        log.propagate = False
        log.addHandler(handler)
        try:
            handler.close()
            child = multiprocessing.get_context("fork").Process(target=_child_logs, args=(5000,))
            child.start()
            child.join(60)
            assert child.exitcode == 0
        finally:
            log.removeHandler(handler)
    file_handler.close()
    delivered = [line for line in log_path.read_text().splitlines() if line.startswith("child-")]
    assert delivered == [f"child-{i}" for i in range(5000)]
