"""Multi-process stamped write harness for the benchmarks (and the demo, which measures the same way).

One function starts N writer processes on one handler kind, releases them together, and returns what they
wrote and how long it took, so the demo and the benchmark measure the same thing the same way.
"""

from __future__ import annotations

import logging
import logging.handlers
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from flocklog.stamps import format_stamp, payload_of, stamped_logger, write_stamped

LINE_FORMAT = "%(asctime)s %(levelname)s [PID:%(process)d] %(message)s"


@dataclass(frozen=True)
class Kind:
    """A way of writing one log set: a handler (or raw ``os.write``) plus what rotation to check it for."""

    name: str
    label: str
    rotation: str  # "none" | "size" | "time"
    needs: str | None = None  # an importable module the kind requires (e.g. concurrent_log_handler)


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("raw", "raw os.write (floor)", "none"),
        Kind("stdlib-file", "stdlib FileHandler", "none"),
        Kind("stdlib-size", "stdlib RotatingFileHandler", "size"),
        Kind("stdlib-timed", "stdlib TimedRotatingFileHandler", "time"),
        Kind("clh-size", "concurrent-log-handler (size)", "size", "concurrent_log_handler"),
        Kind("clh-timed", "concurrent-log-handler (timed)", "time", "concurrent_log_handler"),
        Kind("flocklog-size", "flocklog RotatingFileHandler", "size"),
        Kind("flocklog-timed", "flocklog TimedRotatingFileHandler", "time"),
    )
}


@dataclass(frozen=True)
class Workload:
    kind: str
    directory: Path
    processes: int = 4
    count: int | None = None  # records per writer, or
    duration: float | None = None  # seconds per writer
    payload_size: int = 64
    max_bytes: int = 256 * 1024
    backup_count: int = 1000
    when: str = "S"
    ledger: Path | None = None  # a directory where each writer keeps its running count (flocklog.stamps.Ledger)

    @property
    def log_path(self) -> Path:
        return self.directory / "app.log"


@dataclass
class Result:
    kind: str
    processes: int
    records: int = 0
    seconds: float = 0.0
    per_writer: dict[str, int] = field(default_factory=dict)
    us_per_record: float = 0.0  # mean over writers of (their busy time / their records)
    handler_errors: int = 0  # records the handler itself reported failing (handleError calls)
    errors: list[str] = field(default_factory=list)

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


def available(kind: str) -> bool:
    needs = KINDS[kind].needs
    if needs is None:
        return True
    try:
        __import__(needs)
    except ImportError:
        return False
    return True


def build_handler(work: Workload) -> logging.Handler:
    """The handler a writer process logs through; every kind gets the same formatter."""
    path = str(work.log_path)
    handler: logging.Handler
    if work.kind == "stdlib-file":
        handler = logging.FileHandler(path)
    elif work.kind == "stdlib-size":
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=work.max_bytes, backupCount=work.backup_count)
    elif work.kind == "stdlib-timed":
        handler = logging.handlers.TimedRotatingFileHandler(path, when=work.when, backupCount=work.backup_count)
    elif work.kind == "clh-size":
        from concurrent_log_handler import ConcurrentRotatingFileHandler as ClhSize

        handler = ClhSize(path, maxBytes=work.max_bytes, backupCount=work.backup_count)
    elif work.kind == "clh-timed":
        from concurrent_log_handler import ConcurrentTimedRotatingFileHandler as ClhTimed

        handler = ClhTimed(path, when=work.when, backupCount=work.backup_count)
    elif work.kind == "flocklog-size":
        from flocklog.files.handlers import RotatingFileHandler

        handler = RotatingFileHandler(path, maxBytes=work.max_bytes, backupCount=work.backup_count)
    elif work.kind == "flocklog-timed":
        from flocklog.files.handlers import TimedRotatingFileHandler

        handler = TimedRotatingFileHandler(path, when=work.when, backupCount=work.backup_count)
    else:
        raise ValueError(f"unknown workload kind {work.kind!r}; known: {', '.join(KINDS)}")
    handler.setFormatter(logging.Formatter(LINE_FORMAT))
    return handler


def _raw_writes(work: Workload, run: str, writer: str) -> int:
    """The floor: preformatted lines, one ``os.write`` each, no logging machinery, no rotation."""
    payload = payload_of(work.payload_size)
    fd = os.open(work.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pid = os.getpid()
    seq = 0
    deadline = None if work.duration is None else time.monotonic() + work.duration
    try:
        while (work.count is None or seq < work.count) and (deadline is None or time.monotonic() < deadline):
            now = time.time()
            stamp = format_stamp(run, writer, seq, now, payload)
            line = f"{time.strftime('%Y-%m-%d %H:%M:%S')},000 INFO [PID:{pid}] {stamp}\n"
            os.write(fd, line.encode())
            seq += 1
    finally:
        os.close(fd)
    return seq


def _writer(work: Workload, run: str, writer: str, barrier: Barrier, out: Any) -> None:
    """Body of one writer process: wait for the others, write, report ``(writer, records, busy seconds)``."""
    try:
        try:
            handler = None if work.kind == "raw" else build_handler(work)
        except BaseException:
            barrier.abort()  # release the others and the parent: this run cannot start
            raise
        failures = [0]
        if handler is not None:
            # Count the handler's own error reports instead of printing a traceback per failed record.
            def count_failure(record: logging.LogRecord) -> None:
                failures[0] += 1

            handler.handleError = count_failure  # type: ignore[method-assign]  # harness-only instrumentation
        logger = None if handler is None else stamped_logger(f"flocklog.workload.{writer}", handler)
        barrier.wait(timeout=60)
        started = time.perf_counter()
        if logger is None:
            written = _raw_writes(work, run, writer)
        else:
            written = write_stamped(
                logger,
                run=run,
                writer=writer,
                count=work.count,
                duration=work.duration,
                payload_size=work.payload_size,
                ledger=work.ledger,
            )
        busy = time.perf_counter() - started
        if handler is not None:
            handler.close()
        out.put((writer, written, busy, failures[0], None))
    except BaseException as exc:  # report, never hang the parent on a dead writer
        out.put((writer, 0, 0.0, 0, f"{type(exc).__name__}: {exc}"))


def run_workload(work: Workload, run: str, on_tick: Callable[[float], None] | None = None) -> Result:
    """Run ``work.processes`` writers at once and collect their counts; ``on_tick`` gets elapsed seconds."""
    if work.count is None and work.duration is None:
        raise ValueError("a workload needs count or duration")
    work.directory.mkdir(parents=True, exist_ok=True)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(work.processes + 1)
    out: Any = ctx.Queue()
    procs = [
        ctx.Process(target=_writer, args=(work, run, f"p{index}", barrier, out), daemon=True)
        for index in range(work.processes)
    ]
    for proc in procs:
        proc.start()
    result = Result(kind=work.kind, processes=work.processes)
    try:
        barrier.wait(timeout=60)
    except threading.BrokenBarrierError:
        result.errors.append("a writer failed to start")
    started = time.perf_counter()
    busy_per_record: list[float] = []
    pending = len(procs)
    while pending:
        try:
            writer, written, busy, failures, error = out.get(timeout=0.1)
        except Exception:  # queue.Empty: report progress and keep waiting
            if on_tick is not None:
                on_tick(time.perf_counter() - started)
            if not any(p.is_alive() for p in procs) and out.empty():
                result.errors.append("a writer process died without reporting")
                break
            continue
        pending -= 1
        result.per_writer[writer] = written
        result.records += written
        result.handler_errors += failures
        if error:
            result.errors.append(f"{writer}: {error}")
        if written:
            busy_per_record.append(busy / written)
    result.seconds = time.perf_counter() - started
    for proc in procs:
        proc.join(timeout=10)
    if busy_per_record:
        result.us_per_record = 1e6 * sum(busy_per_record) / len(busy_per_record)
    return result
