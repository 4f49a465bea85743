"""Execution-log pipeline benchmark, one run: per-row INSERT from the app vs batch writes vs the full pipeline.

    .venv/bin/python benchmarks/pipeline.py [--quick] [--dsn postgresql://...] [--redis redis://...]

Needs the PostgreSQL and Redis of this machine. Pipeline rows/s is measured from the first record logged (in any
producer; ``perf_counter`` is the system-wide monotonic clock on Linux) to the last row committed, so process
start-up is not counted; the producers are forked from a parent that has imported the Celery app, as a
``--preload``ed web app would be. ``log()`` latency is measured in the caller with ``perf_counter_ns`` around each
call, with the producers logging as fast as they can (the worst case for the caller: the sender thread, the worker,
Redis and PostgreSQL all compete for the same 2 cores).

The per-row baseline is measured twice: one app process (the figure the target is set against) and as many
concurrent app processes as the pipeline has producers (PostgreSQL's group commit makes that faster).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from flocklog.pipeline.record import ExecutionRecord
from flocklog.pipeline.transports import worker_command
from flocklog.store import open_store


def _insert_rows(dsn: str, table: str, rows: int) -> tuple[float, float]:
    with psycopg.connect(dsn) as conn:
        started = time.perf_counter()
        for i in range(rows):
            r = ExecutionRecord.create(20, "request handled", "bench", n=i)
            conn.execute(
                f"INSERT INTO {table} (id, ts, level, logger, message, fields, host, pid) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (r.id, r.ts, r.level, r.logger, r.message, json.dumps(r.fields), r.host, r.pid),
            )
            conn.commit()
        return started, time.perf_counter()


def _insert_worker(dsn: str, table: str, rows: int, out: Any) -> None:
    out.put(_insert_rows(dsn, table, rows))


def per_row_insert(dsn: str, table: str, rows: int, processes: int = 1) -> float:
    """The design this replaces: each request INSERTs its record and commits, in ``processes`` app processes."""
    if processes == 1:
        started, ended = _insert_rows(dsn, table, rows)
        return rows / (ended - started)
    ctx = multiprocessing.get_context("fork")
    out: Any = ctx.Queue()
    procs = [ctx.Process(target=_insert_worker, args=(dsn, table, rows, out)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    spans = [out.get(timeout=300) for _ in procs]
    for proc in procs:
        proc.join()
    return rows * processes / (max(end for _, end in spans) - min(start for start, _ in spans))


def direct_batches(dsn: str, table: str, rows: int, batch: int) -> float:
    store = open_store(dsn, table=table)
    records = [ExecutionRecord.create(20, "request handled", "bench", n=i) for i in range(rows)]
    started = time.perf_counter()
    for i in range(0, rows, batch):
        store.write_batch(records[i : i + batch])
    seconds = time.perf_counter() - started
    store.close()
    return rows / seconds


class _Discard:
    """A transport that ships nothing: what buffering alone costs the caller, for reference."""

    name = "discard"

    def send(self, records: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _producer(env: dict[str, str], count: int, rate: float | None, out: Any, discard: bool = False) -> None:
    """Log ``count`` records as fast as possible (``rate`` None) or at ``rate`` records/s, timing each call."""
    os.environ.update(env)
    from flocklog.pipeline.logger import ExecutionLogger

    transport: Any = _Discard() if discard else "celery"
    logger = ExecutionLogger("bench", transport=transport, capacity=count + 1)
    lat = []
    first = time.perf_counter()
    for i in range(count):
        if rate is not None:
            pause = first + i / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)  # the rest of a request: I/O waits, during which the sender runs
        t = time.perf_counter_ns()
        logger.info("request handled", n=i)
        lat.append(time.perf_counter_ns() - t)
    last = time.perf_counter()
    logger.close(timeout=120)
    out.put((first, last, lat, dict(logger.counters)))


def _run_producers(
    env: dict[str, str], dsn: str, table: str, producers: int, each: int, rate: float | None, discard: bool = False
) -> dict[str, Any]:
    store = open_store(dsn, table=table)
    before = store.count()
    total = 0 if discard else producers * each
    ctx = multiprocessing.get_context("fork")
    out: Any = ctx.Queue()
    procs = [ctx.Process(target=_producer, args=(env, each, rate, out, discard)) for _ in range(producers)]
    for proc in procs:
        proc.start()
    reports = [out.get(timeout=300) for _ in procs]
    for proc in procs:
        proc.join()
    started = min(first for first, _, _, _ in reports)
    logged = max(last for _, last, _, _ in reports)
    latencies = sorted(ns for _, _, lat, _ in reports for ns in lat)
    batches = sum(counters.get("batches", 0) for _, _, _, counters in reports)
    while store.count() - before < total and time.perf_counter() - started < 300:
        time.sleep(0.01)
    seconds = time.perf_counter() - started
    rows = store.count() - before
    store.close()
    return {
        "rows": rows,
        "expected": total,
        "seconds": round(seconds, 2),
        "rows_per_s": rows / seconds,
        "batches": batches,
        "last_row_after_last_log_s": round(time.perf_counter() - logged, 3),
        "log_p50_us": latencies[len(latencies) // 2] / 1000,
        "log_p99_us": latencies[int(len(latencies) * 0.99)] / 1000,
        "log_p999_us": latencies[int(len(latencies) * 0.999)] / 1000,
    }


def end_to_end(
    dsn: str,
    redis_url: str,
    table: str,
    producers: int,
    each: int,
    paced_each: int,
    rate: float,
    repeat: int,
    workdir: Path,
) -> dict[str, Any]:
    """One worker: ``repeat`` bursts (every producer logging flat out), then a paced run (``rate`` records/s each)."""
    env = {
        **os.environ,
        "FLOCKLOG_BROKER_URL": redis_url,
        "FLOCKLOG_DATABASE_URL": dsn,
        "FLOCKLOG_TABLE": table,
        "FLOCKLOG_SPOOL_DIR": str(workdir / "spool"),
    }
    worker = subprocess.Popen(
        worker_command("--concurrency", "2", "-l", "warning", "--without-gossip", "--without-mingle"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(4)  # worker start-up is not part of the measurement
    import flocklog.pipeline.celery_app  # noqa: F401  # preloaded, as in a web app's master process

    try:
        bursts = [_run_producers(env, dsn, table, producers, each, None) for _ in range(repeat)]
        return {
            "bursts": bursts,
            "burst_median": {
                key: statistics.median(burst[key] for burst in bursts)
                for key in ("rows_per_s", "log_p50_us", "log_p99_us", "log_p999_us")
            },
            "exact_rows": all(burst["rows"] == burst["expected"] for burst in bursts),
            "burst_discard": _run_producers(env, dsn, table, producers, each, None, discard=True),
            "paced": _run_producers(env, dsn, table, producers, paced_each, rate),
            "paced_discard": _run_producers(env, dsn, table, producers, paced_each, rate, discard=True),
        }
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "pipeline.json"))
    args = parser.parse_args(argv)
    per_row_n = 2000 if args.quick else 5000
    producers, each, repeat = 4, (2500 if args.quick else 10000), (1 if args.quick else 5)
    rate, paced_each = 2000.0, (2000 if args.quick else 6000)
    tables = {name: f"flk_bench_{name}_{uuid.uuid4().hex[:6]}" for name in ("row", "b50", "b1000", "e2e")}
    for table in tables.values():
        open_store(args.dsn, table=table).create_schema()
    import redis

    redis.Redis.from_url(args.redis).flushdb()
    results: dict[str, Any] = {}
    try:
        results["per_row_insert_rows_per_s"] = per_row_insert(args.dsn, tables["row"], per_row_n)
        results[f"per_row_insert_{producers}_processes_rows_per_s"] = per_row_insert(
            args.dsn, tables["row"], per_row_n, processes=producers
        )
        results["direct_batch50_rows_per_s"] = direct_batches(args.dsn, tables["b50"], 20000, 50)
        results["direct_batch1000_rows_per_s"] = direct_batches(args.dsn, tables["b1000"], 20000, 1000)
        with tempfile.TemporaryDirectory() as tmp:
            results["end_to_end"] = end_to_end(
                args.dsn, args.redis, tables["e2e"], producers, each, paced_each, rate, repeat, Path(tmp)
            )
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            for table in tables.values():
                conn.execute(f"DROP TABLE IF EXISTS {table}")
    e2e = results["end_to_end"]
    burst, paced = e2e["burst_median"], e2e["paced"]
    ratio = burst["rows_per_s"] / results["per_row_insert_rows_per_s"]
    concurrent = results[f"per_row_insert_{producers}_processes_rows_per_s"]
    exact = e2e["exact_rows"] and paced["rows"] == paced["expected"]
    targets = {
        "end_to_end_vs_per_row_insert": {"value": round(ratio, 1), "target": ">= 10", "met": ratio >= 10},
        f"end_to_end_vs_per_row_insert_{producers}_processes": {
            "value": round(burst["rows_per_s"] / concurrent, 1),
            "target": "(reported)",
            "met": None,
        },
        "log_p99_us_burst": {
            "value": round(burst["log_p99_us"], 1),
            "target": "<= 20",
            "met": burst["log_p99_us"] <= 20,
        },
        "log_p99_us_paced": {
            "value": round(paced["log_p99_us"], 1),
            "target": "<= 20",
            "met": paced["log_p99_us"] <= 20,
        },
        "exact_rows": {"value": exact, "target": "True", "met": exact},
    }
    print(f"{'path':50} {'rows/s':>10}")
    print(f"{'per-row INSERT + commit, 1 app process':50} {results['per_row_insert_rows_per_s']:>10,.0f}")
    print(f"{f'per-row INSERT + commit, {producers} app processes':50} {concurrent:>10,.0f}")
    print(f"{'direct batch write, 50 rows':50} {results['direct_batch50_rows_per_s']:>10,.0f}")
    print(f"{'direct batch write, 1000 rows (COPY)':50} {results['direct_batch1000_rows_per_s']:>10,.0f}")
    label = f"pipeline, {producers} producers flat out (median of {repeat})"
    print(f"{label:50} {burst['rows_per_s']:>10,.0f}   batches {[b['batches'] for b in e2e['bursts']]}")
    print()
    print(f"{'ExecutionLogger.log() in the caller':50} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9}")
    rows = (
        (f"flat out (median of {repeat})", burst),
        ("flat out, transport that ships nothing (reference)", e2e["burst_discard"]),
        (f"paced, {rate:,.0f}/s per producer", paced),
        ("paced, transport that ships nothing (reference)", e2e["paced_discard"]),
    )
    for name, figures in rows:
        print(f"{name:50} {figures['log_p50_us']:>8.1f} {figures['log_p99_us']:>8.1f} {figures['log_p999_us']:>9.1f}")
    print(f"paced: last row committed {paced['last_row_after_last_log_s']} s after the last log() call")
    print()
    for name, value in targets.items():
        print(f"{name}: {value}")
    Path(args.out).write_text(
        json.dumps(
            {
                "benchmark": "pipeline",
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "params": {
                    "per_row": per_row_n,
                    "producers": producers,
                    "each": each,
                    "repeat": repeat,
                    "paced_rate_per_producer": rate,
                    "paced_each": paced_each,
                },
                "results": results,
                "targets": targets,
                "note": "one run; every figure measured side by side on the same machine",
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
