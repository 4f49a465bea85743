"""How HubHandler cuts its buffer into batches: never a frame over the limit, every record once, in order."""

from __future__ import annotations

import logging
import random
from pathlib import Path

from flocklog.hub import start_hub
from flocklog.hub.client import HubHandler

MAX_FRAME = 6000  # small, so that byte size, not batch_size, decides where most batches end


def test_batches_are_cut_to_the_frame_limit_and_every_record_arrives_once_in_order(tmp_path: Path) -> None:
    log_path = tmp_path / "hub.log"
    file_handler = logging.FileHandler(log_path)
    rng = random.Random(7)
    # Mostly small records, some large, and a few too large for any frame (truncated by the client to the limit,
    # then sent alone): each kind lands at a different place relative to a batch's byte boundary.
    sizes = [rng.choice([rng.randint(1, 200), rng.randint(200, 3000), 9000]) for _ in range(1500)]
    with start_hub([file_handler], max_frame=MAX_FRAME) as hub:
        handler = HubHandler(hub.address, spool_dir=tmp_path / "spool", max_frame=MAX_FRAME, batch_size=512)
        handler.setFormatter(logging.Formatter("%(message)s"))
        for index, size in enumerate(sizes):
            handler.handle(logging.makeLogRecord({"msg": f"{index:05d} " + "x" * size, "levelno": logging.INFO}))
        assert handler.drain(30)
        stats = handler.stats()
        handler.close()
        hub_stats = hub.status()
    file_handler.close()
    assert stats["dropped_rejected"] == stats["spooled"] == stats["dropped_full"] == 0, stats
    assert hub_stats["malformed"] == 0, hub_stats
    numbers = [int(line[:5]) for line in log_path.read_text().splitlines() if line[:5].isdigit()]
    assert numbers == list(range(len(sizes)))
    assert stats["truncated"] == sizes.count(9000) > 0
    # 1500 records averaging ~1.3 KB cannot travel in 3 batches of 512: the byte limit cut them.
    assert stats["batches"] >= sum(min(s, MAX_FRAME) for s in sizes) // MAX_FRAME


def test_the_hub_writes_chunks_to_flocklogs_file_handlers_in_one_write_and_still_rotates(tmp_path: Path) -> None:
    import flocklog

    log_path = tmp_path / "hub.log"
    sized = flocklog.RotatingFileHandler(log_path, maxBytes=20_000, backupCount=50)
    timed_path = tmp_path / "timed.log"
    timed = flocklog.TimedRotatingFileHandler(timed_path, when="S", backupCount=100)
    for h in (sized, timed):
        h.setFormatter(logging.Formatter("%(message)s"))
    with start_hub([sized, timed]) as hub:
        handler = HubHandler(hub.address, spool_dir=tmp_path / "spool", when_full="block")
        handler.setFormatter(logging.Formatter("%(message)s"))
        for i in range(5000):
            handler.handle(logging.makeLogRecord({"msg": f"chunk {i:05d}", "levelno": logging.INFO}))
        assert handler.drain(60)
        handler.close()
    sized.close()
    timed.close()
    for base in (log_path, timed_path):
        lines = [
            line
            for p in tmp_path.glob(base.name + "*")
            if p.is_file() and not p.name.endswith("lock")
            for line in p.read_text().splitlines()
        ]
        assert sorted(lines) == [f"chunk {i:05d}" for i in range(5000)], base
    assert len(list(tmp_path.glob("hub.log.*"))) > 2, "size rotation happened between chunks"
    assert all(p.stat().st_size <= 20_000 for p in tmp_path.glob("hub.log*") if not p.name.endswith("lock"))


class _Shouting(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).upper()


def test_a_batch_write_is_byte_for_byte_what_writing_each_record_gives(tmp_path: Path) -> None:
    """emit_batch's shortcut (a line is its record's msg) is taken only where formatting would give just that."""
    import flocklog

    def records() -> list[logging.LogRecord]:
        plain = [logging.makeLogRecord({"msg": f"plain {i} é", "levelno": logging.INFO}) for i in range(5)]
        with_args = logging.makeLogRecord({"msg": "with %s", "args": ("args",)})
        with_exc = logging.makeLogRecord({"msg": "with exc", "exc_text": "Traceback: boom"})
        with_stack = logging.makeLogRecord({"msg": "with stack", "stack_info": "Stack: here"})
        not_str = logging.makeLogRecord({"msg": 42})
        return [*plain, with_args, with_exc, with_stack, not_str, *plain]

    formatters: list[logging.Formatter | None] = [
        None,
        logging.Formatter("%(message)s"),
        logging.Formatter("%(levelname)s %(message)s"),
        _Shouting("%(message)s"),
        logging.Formatter("{message}", style="{"),
    ]
    for index, formatter in enumerate(formatters):
        for batch in (records()[:5], records()):  # the shortcut's case, and one record that spoils it
            one, many = tmp_path / f"one-{index}-{len(batch)}.log", tmp_path / f"many-{index}-{len(batch)}.log"
            single = flocklog.RotatingFileHandler(one, encoding="utf-8")
            batched = flocklog.RotatingFileHandler(many, encoding="utf-8")
            for h in (single, batched):
                if formatter is not None:
                    h.setFormatter(formatter)
            for record in batch:
                single.emit(record)
            batched.emit_batch(records()[: len(batch)])
            single.close()
            batched.close()
            assert many.read_bytes() == one.read_bytes(), (formatter, len(batch))


class _Prefixed(logging.LogRecord):
    def getMessage(self) -> str:  # what a setLogRecordFactory subclass may do
        return "PREFIX " + super().getMessage()


def test_a_batch_write_matches_per_record_writes_for_record_subclasses_and_stateful_encodings(
    tmp_path: Path,
) -> None:
    """Two cases the shortcut got wrong (found in review): a record class overriding ``getMessage`` was written as
    its raw ``msg``, and a stateful encoding (UTF-7, ISO-2022) with no terminator encoded the joined text
    differently from the records one by one."""
    import flocklog

    cases: list[tuple[str, str, list[logging.LogRecord]]] = [
        ("utf-8", "\n", [_Prefixed("n", logging.INFO, "p", 1, f"hello {i}", None, None) for i in range(3)]),
        ("utf-7", "", [logging.makeLogRecord({"msg": "é"}) for _ in range(3)]),
        ("iso2022_jp", "", [logging.makeLogRecord({"msg": "日本"}) for _ in range(3)]),
    ]
    for index, (encoding, terminator, batch) in enumerate(cases):
        one, many = tmp_path / f"one-{index}.log", tmp_path / f"many-{index}.log"
        single = flocklog.RotatingFileHandler(one, encoding=encoding)
        batched = flocklog.RotatingFileHandler(many, encoding=encoding)
        for h in (single, batched):
            h.terminator = terminator
        for record in batch:
            single.emit(record)
        batched.emit_batch(batch)
        single.close()
        batched.close()
        assert many.read_bytes() == one.read_bytes(), encoding
