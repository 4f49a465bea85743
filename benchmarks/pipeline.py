"""Execution-log pipeline benchmark, one run: per-row INSERT from the app vs batch writes vs the full pipeline.

    .venv/bin/python benchmarks/pipeline.py [--quick] [--dsn postgresql://...] [--redis redis://...]

Needs the PostgreSQL and Redis of this machine. Rows/s is measured from the first record logged to the last row
committed; ``log()`` latency is measured in the caller with ``perf_counter_ns`` around each call.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
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


def per_row_insert(dsn: str, table: str, rows: int) -> float:
    """The design this replaces: each request INSERTs its record and commits."""
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
        return rows / (time.perf_counter() - started)


def direct_batches(dsn: str, table: str, rows: int, batch: int) -> float:
    store = open_store(dsn, table=table)
    records = [ExecutionRecord.create(20, "request handled", "bench", n=i) for i in range(rows)]
    started = time.perf_counter()
    for i in range(0, rows, batch):
        store.write_batch(records[i : i + batch])
    seconds = time.perf_counter() - started
    store.close()
    return rows / seconds


def _producer(env: dict[str, str], count: int, out: Any) -> None:
    os.environ.update(env)
    from flocklog.pipeline.logger import ExecutionLogger

    logger = ExecutionLogger("bench", transport="celery", capacity=count + 1)
    lat = []
    for i in range(count):
        t = time.perf_counter_ns()
        logger.info("request handled", n=i)
        lat.append(time.perf_counter_ns() - t)
    logger.close(timeout=120)
    out.put(lat)


def end_to_end(dsn: str, redis_url: str, table: str, producers: int, each: int, workdir: Path) -> dict[str, Any]:
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
    total = producers * each
    ctx = multiprocessing.get_context("fork")
    out: Any = ctx.Queue()
    started = time.perf_counter()
    procs = [ctx.Process(target=_producer, args=(env, each, out)) for _ in range(producers)]
    for proc in procs:
        proc.start()
    latencies = [ns for _ in procs for ns in out.get(timeout=300)]
    for proc in procs:
        proc.join()
    store = open_store(dsn, table=table)
    while store.count() < total and time.perf_counter() - started < 300:
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    rows = store.count()
    store.close()
    worker.terminate()
    worker.wait(timeout=30)
    latencies.sort()
    return {
        "rows": rows,
        "expected": total,
        "seconds": round(seconds, 2),
        "rows_per_s": rows / seconds,
        "log_p50_us": latencies[len(latencies) // 2] / 1000,
        "log_p99_us": latencies[int(len(latencies) * 0.99)] / 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "pipeline.json"))
    args = parser.parse_args(argv)
    per_row_n = 2000 if args.quick else 5000
    producers, each = 4, (2500 if args.quick else 10000)
    tables = {name: f"flk_bench_{name}_{uuid.uuid4().hex[:6]}" for name in ("row", "b50", "b1000", "e2e")}
    for table in tables.values():
        open_store(args.dsn, table=table).create_schema()
    import redis

    redis.Redis.from_url(args.redis).flushdb()
    results: dict[str, Any] = {}
    try:
        results["per_row_insert_rows_per_s"] = per_row_insert(args.dsn, tables["row"], per_row_n)
        results["direct_batch50_rows_per_s"] = direct_batches(args.dsn, tables["b50"], 20000, 50)
        results["direct_batch1000_rows_per_s"] = direct_batches(args.dsn, tables["b1000"], 20000, 1000)
        with tempfile.TemporaryDirectory() as tmp:
            results["end_to_end"] = end_to_end(args.dsn, args.redis, tables["e2e"], producers, each, Path(tmp))
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            for table in tables.values():
                conn.execute(f"DROP TABLE IF EXISTS {table}")
    e2e = results["end_to_end"]
    ratio = e2e["rows_per_s"] / results["per_row_insert_rows_per_s"]
    targets = {
        "end_to_end_vs_per_row_insert": {"value": round(ratio, 1), "target": ">= 10", "met": ratio >= 10},
        "log_p99_us": {"value": round(e2e["log_p99_us"], 1), "target": "<= 20", "met": e2e["log_p99_us"] <= 20},
        "exact_rows": {
            "value": e2e["rows"] == e2e["expected"],
            "target": "True",
            "met": e2e["rows"] == e2e["expected"],
        },
    }
    print(f"{'path':45} {'rows/s':>12}")
    print(f"{'per-row INSERT + commit (from the app)':45} {results['per_row_insert_rows_per_s']:>12,.0f}")
    print(f"{'direct batch write, 50 rows':45} {results['direct_batch50_rows_per_s']:>12,.0f}")
    print(f"{'direct batch write, 1000 rows (COPY)':45} {results['direct_batch1000_rows_per_s']:>12,.0f}")
    label = f"pipeline {producers} producers -> Redis -> worker -> PostgreSQL"
    print(f"{label:45} {e2e['rows_per_s']:>12,.0f}   ({e2e['rows']}/{e2e['expected']} rows)")
    print(f"ExecutionLogger.log() in the caller: p50 {e2e['log_p50_us']:.1f} us, p99 {e2e['log_p99_us']:.1f} us")
    for name, value in targets.items():
        print(f"{name}: {value}")
    Path(args.out).write_text(
        json.dumps(
            {
                "benchmark": "pipeline",
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "params": {"per_row": per_row_n, "producers": producers, "each": each},
                "results": results,
                "targets": targets,
                "note": "single run; ratios measured side by side",
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
