"""Stamped records: the line format that lets ``flocklog verify`` prove nothing was lost, doubled or torn.

Every stamped message carries a run id, a writer id, a per-writer sequence number, the record's creation time and
a CRC of all of that, so a checker can find gaps (loss), repeats (duplication), broken lines (torn writes) and
records filed under the wrong time interval. Tests, ``flocklog demo`` and the benchmarks all write through here;
so can a user who wants to prove *their* deployment loses nothing.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import re
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MARK = "flk1"

# The stamp may sit anywhere in a formatted line (after a timestamp, a level, a PID...); it always ends the line.
STAMP_RE = re.compile(
    r"flk1 (?P<run>[A-Za-z0-9_-]+) (?P<writer>[A-Za-z0-9_.:-]+) (?P<seq>\d+) (?P<created>\d+\.\d{6}) "
    r"(?P<payload>[A-Za-z0-9]*) (?P<crc>[0-9a-f]{8})$"
)


@dataclass(frozen=True)
class Stamp:
    """The message object a stamped writer logs; :class:`StampFilter` renders it once the record exists."""

    run: str
    writer: str
    seq: int
    payload: str = ""


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
) -> int:
    """Log stamped records until ``count`` records are written or ``duration`` seconds have passed.

    Returns how many records were logged (sequence numbers ``0 .. n-1``), which is what a checker must find.
    The logger must have a :class:`StampFilter` (see :func:`stamped_logger`).
    """
    if count is None and duration is None:
        raise ValueError("write_stamped needs count or duration")
    payload = payload_of(payload_size)
    deadline = None if duration is None else time.monotonic() + duration
    seq = 0
    while (count is None or seq < count) and (deadline is None or time.monotonic() < deadline):
        logger.log(level, Stamp(run, writer, seq, payload))
        seq += 1
        if on_record is not None:
            on_record(seq)
        if pause:
            time.sleep(pause)
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
    """``python -m flocklog.testing``: one stamped writer through any handler, for tests and your own checks.

    Example: ``python -m flocklog.testing --handler flocklog.RotatingFileHandler
    --kwargs '{"filename": "logs/app.log", "maxBytes": 65536, "backupCount": 50}' --run r1 --writer w1 --count 1000``
    then ``flocklog verify logs/app.log --expect 1000``. Prints the number of records written.
    """
    parser = argparse.ArgumentParser(prog="python -m flocklog.testing", description=main.__doc__)
    parser.add_argument("--handler", required=True, help="dotted path of a logging.Handler class")
    parser.add_argument("--kwargs", default="{}", help="JSON object of constructor keyword arguments")
    parser.add_argument("--run", required=True)
    parser.add_argument("--writer", required=True)
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--payload-size", type=int, default=64)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between records")
    parser.add_argument("--format", default="%(asctime)s %(levelname)s [PID:%(process)d] %(message)s")
    args = parser.parse_args(argv)
    handler = _resolve(args.handler)(**json.loads(args.kwargs))
    handler.setFormatter(logging.Formatter(args.format))
    logger = stamped_logger(f"flocklog.testing.{args.writer}", handler)
    written = write_stamped(
        logger,
        run=args.run,
        writer=args.writer,
        count=args.count,
        duration=args.duration,
        payload_size=args.payload_size,
        pause=args.pause,
    )
    handler.close()
    print(written, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
