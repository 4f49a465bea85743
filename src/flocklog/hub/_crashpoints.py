"""Test-only crash points of the hub's writer: ``FLOCKLOG_HUB_TEST_CRASH=point:n`` SIGKILLs the hub there.

Why in shipped code: the exactly-once windows of a hub restart (a batch written and not yet recorded, a write cut
short by the kill, a watermark entry cut short) are microseconds wide, so a random SIGKILL finds each one only
now and then; a kill at a named point tests each one every time, with real processes and the real disk. Unset
(always, outside tests) it costs the writer one ``is None`` test per batch. ``n`` counts from 1 the writer's
commits of new (not duplicate) batches: a group of batches that waited together is one (a client that waits for
each ack, as these tests' do, makes groups of one); several points are separated by commas
(``mid_write:2,after_write:5``).

| point             | where the hub kills itself                                                           |
|-------------------|--------------------------------------------------------------------------------------|
| ``mid_begin``     | after writing the first half of the batch's begin entry in the journal               |
| ``mid_write``     | after writing the first half of the batch's bytes to each file handler's file         |
| ``after_write``   | after the batch was written, before its watermark entry                              |
| ``mid_watermark`` | after writing the first half of the batch's watermark entry                          |
| ``after_watermark``| after the watermark entry, before the ack                                           |

Shared state: the thread that holds the writer's ``commit_lock`` (the writer, or the loop committing a small batch).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import NoReturn

ENV_CRASH = "FLOCKLOG_HUB_TEST_CRASH"
POINTS = ("mid_begin", "mid_write", "after_write", "mid_watermark", "after_watermark")


class CrashPoints:
    """Which batch (counted per point) kills the hub at which point."""

    def __init__(self, spec: str) -> None:
        self._at: dict[str, int] = {}
        self._seen: dict[str, int] = dict.fromkeys(POINTS, 0)
        for item in filter(None, (part.strip() for part in spec.split(","))):
            point, _, nth = item.partition(":")
            if point not in POINTS or not nth.isdigit():
                raise ValueError(f"{ENV_CRASH}: {item!r} is not POINT:N with POINT one of {', '.join(POINTS)}")
            self._at[point] = int(nth)

    def due(self, point: str) -> bool:
        """Count one pass of ``point``; True when this is the pass that must kill the hub."""
        self._seen[point] += 1
        return self._at.get(point) == self._seen[point]

    def check(self, point: str) -> None:
        if self.due(point):
            die()


def die() -> NoReturn:
    """SIGKILL this process, as an operator's ``kill -9`` or the OOM killer would: no handler, no cleanup."""
    os.kill(os.getpid(), signal.SIGKILL)
    while True:  # the signal is delivered before kill() returns; this only satisfies the type checker
        time.sleep(1)


def from_env() -> CrashPoints | None:
    spec = os.environ.get(ENV_CRASH)
    return CrashPoints(spec) if spec else None


def write_half_and_die(handlers: list[logging.Handler], records: list[logging.LogRecord]) -> NoReturn:
    """What a SIGKILL during a long ``write`` leaves (Linux stops a write between pages): half a batch, then death."""
    for handler in handlers:
        path = getattr(handler, "baseFilename", None)
        if not isinstance(path, str):
            continue
        terminator = getattr(handler, "terminator", "\n")
        data = "".join(handler.format(record) + terminator for record in records).encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, data[: len(data) // 2])
    die()
