"""Stamped records: the line format that lets ``flocklog verify`` prove nothing was lost, doubled or torn.

Every stamped message carries a run id, a writer id, a per-writer sequence number, the record's creation time and
a CRC of all of that, so a checker can find gaps (loss), repeats (duplication), broken lines (torn writes) and
records filed under the wrong time interval. Tests, ``flocklog demo`` and the benchmarks all write through here;
so can a user who wants to prove *their* deployment loses nothing. A writer may also keep a ledger (its running
count, see :class:`Ledger`) so a checker knows how many records to expect even from a writer that was killed.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import logging
import os
import re
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "MARK",
    "RUN_RE",
    "STAMP_RE",
    "WRITER_RE",
    "Ledger",
    "ParsedStamp",
    "Stamp",
    "StampFilter",
    "check_ids",
    "format_stamp",
    "main",
    "parse_stamp",
    "payload_of",
    "read_ledger",
    "stamped_logger",
    "write_stamped",
]

MARK = "flk1"

# What a run id and a writer id may hold: exactly what STAMP_RE reads back. A writer refuses anything else before
# writing a record, so a set can never be full of stamps its own checker calls torn (``--run v1.2`` once was).
RUN_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
WRITER_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")

# The stamp may sit anywhere in a formatted line (after a timestamp, a level, a PID...); it always ends the line.
STAMP_RE = re.compile(
    r"flk1 (?P<run>[A-Za-z0-9_-]+) (?P<writer>[A-Za-z0-9_.:-]+) (?P<seq>\d+) (?P<created>\d+\.\d{6}) "
    r"(?P<payload>[A-Za-z0-9]*) (?P<crc>[0-9a-f]{8})$"
)
_PAYLOAD_RE = re.compile(r"[A-Za-z0-9]*")


@functools.lru_cache(maxsize=1024)
def check_ids(run: str, writer: str) -> None:
    """Raise :class:`ValueError` unless ``run`` and ``writer`` are ids that ``flocklog verify`` can read back.

    Cached: it runs for every stamped record, and a writer keeps the same pair for its whole life.
    """
    if not RUN_RE.fullmatch(run):
        raise ValueError(f"run id {run!r} cannot be verified: use 1-64 of A-Z a-z 0-9 _ - (no dots or spaces)")
    if not WRITER_RE.fullmatch(writer):
        raise ValueError(f"writer id {writer!r} cannot be verified: use 1-128 of A-Z a-z 0-9 _ . : -")


@dataclass(frozen=True)
class Stamp:
    """The message object a stamped writer logs; :class:`StampFilter` renders it once the record exists."""

    run: str
    writer: str
    seq: int
    payload: str = ""

    def __post_init__(self) -> None:
        check_ids(self.run, self.writer)


@dataclass(frozen=True)
class ParsedStamp:
    run: str
    writer: str
    seq: int
    created: float
    payload: str


def _crc(body: str) -> str:
    return f"{zlib.crc32(body.encode('ascii')):08x}"


def format_stamp(run: str, writer: str, seq: int, created: float, payload: str = "") -> str:
    """Render one stamped message; ``created`` is the record's own time so interval checks are exact.

    The time is truncated to the microsecond, never rounded: 36.9999996 rounded reads 37.000000, a record the
    handler rightly filed in the 36 s slot would then look misfiled in it.
    """
    check_ids(run, writer)
    if seq < 0 or not _PAYLOAD_RE.fullmatch(payload):
        raise ValueError(f"a stamp needs seq >= 0 and an alphanumeric payload, got seq={seq} payload={payload!r}")
    micros = int(created * 1_000_000)
    body = f"{MARK} {run} {writer} {seq} {micros // 1_000_000}.{micros % 1_000_000:06d} {payload}"
    return f"{body} {_crc(body)}"


def parse_stamp(line: str) -> ParsedStamp | None:
    """Return the stamp a line ends with, or ``None`` if the line is torn, corrupted or carries none.

    Callers decide what a missing stamp means: a line that mentions the mark but does not parse is torn.
    """
    match = STAMP_RE.search(line)
    if match is None:
        return None
    body = line[match.start() : match.start("crc") - 1]
    # A second mark anywhere in the line means two records' bytes were mixed: torn, even if the tail parses.
    if _crc(body) != match["crc"] or line.count(MARK + " ") != 1:
        return None
    return ParsedStamp(
        run=match["run"],
        writer=match["writer"],
        seq=int(match["seq"]),
        created=float(match["created"]),
        payload=match["payload"],
    )


class StampFilter(logging.Filter):
    """Turns a :class:`Stamp` message into its text using the record's ``created`` time.

    Attach it to the logger (or handler) that stamped writers log to. Records whose message is not a ``Stamp``
    pass through untouched.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg
        if isinstance(msg, Stamp):
            record.msg = format_stamp(msg.run, msg.writer, msg.seq, record.created, msg.payload)
            record.args = None
        return True


def payload_of(size: int) -> str:
    """A deterministic alphanumeric payload, so record sizes (and so rotation frequency) are controllable."""
    return ("x" * size) if size > 0 else ""


class Ledger:
    """One writer's running count of records logged, kept in ``<directory>/<run>.<writer>`` for ``verify``.

    A checker that only sees the log cannot tell a writer that stopped at 800 from one whose last 200 records
    were lost; the ledger says how many were logged, and when the writer started and last wrote (so retention
    can be told apart from loss). Each record costs one ``pwrite`` of a fixed-width line
    (``<count> <start time> <last time>``) at offset 0, done *after* the record was handed to the logger: a writer
    killed between the two leaves the ledger one record behind, never ahead, so the ledger is a lower bound that
    ``verify`` allows to be short by exactly one.
    """

    def __init__(self, directory: str | os.PathLike[str], run: str, writer: str) -> None:
        check_ids(run, writer)
        self.path = Path(directory) / f"{run}.{writer}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._started = time.time()
        self.update(0)

    def update(self, count: int) -> None:
        os.pwrite(self._fd, f"{count:>20d} {self._started:.6f} {time.time():.6f}\n".encode("ascii"), 0)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_ledger(directory: str | os.PathLike[str]) -> dict[tuple[str, str], tuple[int, float, float]]:
    """Every ``(run, writer) -> (records logged, start time, last write time)`` a ledger directory holds.

    Raises :class:`ValueError` naming the file for an entry that is not a ledger line.
    """
    entries: dict[tuple[str, str], tuple[int, float, float]] = {}
    for path in sorted(Path(directory).iterdir()):
        run, dot, writer = path.name.partition(".")
        if not path.is_file() or not dot or not RUN_RE.fullmatch(run) or not WRITER_RE.fullmatch(writer):
            continue
        fields = path.read_text("ascii", errors="replace").split()
        try:
            start = float(fields[1])
            entries[(run, writer)] = (int(fields[0]), start, float(fields[2]) if len(fields) > 2 else start)
        except (IndexError, ValueError):
            raise ValueError(f"{path} is not a flocklog ledger entry (expected '<count> <start> <last>')") from None
    return entries


def write_stamped(
    logger: logging.Logger,
    *,
    run: str,
    writer: str,
    count: int | None = None,
    duration: float | None = None,
    payload_size: int = 64,
    pause: float = 0.0,
    level: int = logging.INFO,
    on_record: Callable[[int], None] | None = None,
    ledger: str | os.PathLike[str] | None = None,
) -> int:
    """Log stamped records until ``count`` records are written or ``duration`` seconds have passed.

    Returns how many records were logged (sequence numbers ``0 .. n-1``), which is what a checker must find.
    The logger must have a :class:`StampFilter` (see :func:`stamped_logger`). With ``ledger`` (a directory) the
    running count is kept there as it goes, so ``flocklog verify --ledger`` finds a missing tail even when this
    process is killed. Ids ``verify`` could not read are refused before anything is written.
    """
    if count is None and duration is None:
        raise ValueError("write_stamped needs count or duration")
    check_ids(run, writer)
    book = None if ledger is None else Ledger(ledger, run, writer)
    payload = payload_of(payload_size)
    deadline = None if duration is None else time.monotonic() + duration
    seq = 0
    try:
        while (count is None or seq < count) and (deadline is None or time.monotonic() < deadline):
            logger.log(level, Stamp(run, writer, seq, payload))
            seq += 1
            if book is not None:
                book.update(seq)
            if on_record is not None:
                on_record(seq)
            if pause:
                time.sleep(pause)
    finally:
        if book is not None:
            book.close()
    return seq


def stamped_logger(name: str, *handlers: logging.Handler, level: int = logging.INFO) -> logging.Logger:
    """A non-propagating logger wired with ``handlers`` and a :class:`StampFilter`, ready for stamped writes."""
    logger = logging.getLogger(name)
    logger.setLevel(level)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    for handler in handlers:
        logger.addHandler(handler)
    if not any(isinstance(f, StampFilter) for f in logger.filters):
        logger.addFilter(StampFilter())
    return logger


def _resolve(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> int:
    """``python -m flocklog.stamps``: one stamped writer through any handler, for tests and your own checks.

    Example: ``python -m flocklog.stamps --handler flocklog.RotatingFileHandler
    --kwargs '{"filename": "logs/app.log", "maxBytes": 65536, "backupCount": 50}' --run r1 --writer w1 --count 1000``
    then ``flocklog verify logs/app.log --expect 1000``. Prints the number of records written.
    """
    parser = argparse.ArgumentParser(prog="python -m flocklog.stamps", description=main.__doc__)
    parser.add_argument("--handler", required=True, help="dotted path of a logging.Handler class")
    parser.add_argument("--kwargs", default="{}", help="JSON object of constructor keyword arguments")
    parser.add_argument("--run", required=True)
    parser.add_argument("--writer", required=True)
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--payload-size", type=int, default=64)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between records")
    parser.add_argument("--format", default="%(asctime)s %(levelname)s [PID:%(process)d] %(message)s")
    parser.add_argument("--ledger", default=None, help="directory where the running count is kept for verify")
    args = parser.parse_args(argv)
    try:
        check_ids(args.run, args.writer)
    except ValueError as exc:
        parser.error(str(exc))
    handler = _resolve(args.handler)(**json.loads(args.kwargs))
    handler.setFormatter(logging.Formatter(args.format))
    logger = stamped_logger(f"flocklog.stamps.{args.writer}", handler)
    written = write_stamped(
        logger,
        run=args.run,
        writer=args.writer,
        count=args.count,
        duration=args.duration,
        payload_size=args.payload_size,
        pause=args.pause,
        ledger=args.ledger,
    )
    handler.close()
    print(written, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
