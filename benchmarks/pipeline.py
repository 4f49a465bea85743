"""Execution-log pipeline throughput, like with like: N app processes each way, interleaved repetitions.

    .venv/bin/python benchmarks/pipeline.py [--quick] [--producers 4] [--repeat 5] [--dsn ...] [--redis ...]

Each repetition runs, one after the other on the same machine:

1. **per-row INSERT**: N app processes, each INSERTing and committing one row per record (the design replaced);
2. **COPY floor**: N processes writing pre-built records straight to the store in batches of 1000 (COPY through a
   temp table + ``ON CONFLICT``), the fastest a batch writer gets here;
3. **pipeline**: N producer processes with ``ExecutionLogger`` at its DEFAULT settings (a flat-out burst may fill the
   10,000-record buffer and spill to the spool, which is replayed), Redis, one Celery worker (concurrency 2),
   PostgreSQL; rows/s from the first record logged to the last row committed; records dropped are counted.

Reported: the median of the repetitions with the spread (min-max), the ratios of the medians, and each
repetition's ratios. ``log()`` latency in the caller is ``benchmarks/pipeline_logger.py``'s job.
The producers are forked from a parent that has imported the Celery app and the client libraries its transport
uses, as a ``--preload``ed web app would be (and as the floor's processes inherit psycopg): see ``_preload.py``.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from _preload import preload_transport  # benchmarks/, beside this script

from flocklog.pipeline.record import ExecutionRecord
from flocklog.pipeline.transports import worker_command
from flocklog.store import open_store


def _fan_out(processes: int, target: Callable[..., None], args: tuple[Any, ...]) -> list[Any]:
    """Run ``target(*args, out)`` in ``processes`` forked processes; what each put on ``out``."""
    ctx = multiprocessing.get_context("fork")
    out: Any = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, out)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    reports = [out.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
    return reports


def _insert_rows(dsn: str, table: str, rows: int, out: Any) -> None:
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
        out.put((started, time.perf_counter()))


def _copy_rows(dsn: str, table: str, rows: int, out: Any) -> None:
    store = open_store(dsn, table=table)
    records = [ExecutionRecord.create(20, "request handled", "bench", n=i) for i in range(rows)]
    started = time.perf_counter()
    for i in range(0, rows, 1000):
        store.write_batch(records[i : i + 1000])
    out.put((started, time.perf_counter()))
    store.close()


def _rate(reports: list[Any], rows: int) -> float:
    return rows / (max(end for _, end in reports) - min(start for start, _ in reports))


def _produce(env: dict[str, str], count: int, out: Any) -> None:
    """Log ``count`` records flat out with ExecutionLogger's defaults (only the spool directory is set)."""
    os.environ.update(env)
    from flocklog.pipeline.logger import ExecutionLogger

    logger = ExecutionLogger("bench", transport="celery")
    first = time.perf_counter()
    for i in range(count):
        logger.info("request handled", n=i)
    logger.close(timeout=120)
    stats = logger.stats()
    out.put((first, stats["dropped"], stats.get("spilled", 0)))


def pipeline(env: dict[str, str], dsn: str, table: str, producers: int, each: int) -> dict[str, Any]:
    store = open_store(dsn, table=table)
    before = store.count()
    reports = _fan_out(producers, _produce, (env, each))
    started = min(first for first, _, _ in reports)
    expected = producers * each
    while store.count() - before < expected and time.perf_counter() - started < 300:
        time.sleep(0.01)
    seconds = time.perf_counter() - started
    rows = store.count() - before
    store.close()
    return {
        "rows_per_s": rows / seconds,
        "rows": rows,
        "expected": expected,
        "dropped": sum(dropped for _, dropped, _ in reports),
        "spilled": sum(spilled for _, _, spilled in reports),
    }


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    worker = subprocess.Popen(
        worker_command("--concurrency", "2", "-l", "info", "--without-gossip", "--without-mingle"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "ab"),  # noqa: SIM115  # the child owns it
    )
    deadline = time.monotonic() + 120
    while "ready." not in log.read_text(errors="replace"):
        if worker.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the worker did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)
    return worker


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer records per repetition (same repetitions)")
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15", help="a Redis database this run may flush")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "pipeline.json"))
    args = parser.parse_args(argv)
    n = args.producers
    per_row_each, each = (500, 5000) if args.quick else (1500, 20000)
    tables = {name: f"flk_bench_{name}_{uuid.uuid4().hex[:6]}" for name in ("row", "copy", "pipe")}
    for table in tables.values():
        open_store(args.dsn, table=table).create_schema()
    import redis

    redis.Redis.from_url(args.redis).flushdb()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "FLOCKLOG_BROKER_URL": args.redis,
            "FLOCKLOG_DATABASE_URL": args.dsn,
            "FLOCKLOG_TABLE": tables["pipe"],
            "FLOCKLOG_SPOOL_DIR": str(Path(tmp) / "spool"),
            "FLOCKLOG_DEAD_LETTER_DIR": str(Path(tmp) / "dead"),
        }
        worker = _start_worker(env, Path(tmp) / "worker.log")
        preload_transport(args.redis)

        try:
            for rep in range(args.repeat):  # interleaved: every path once per repetition
                run = {
                    "per_row_insert": _rate(
                        _fan_out(n, _insert_rows, (args.dsn, tables["row"], per_row_each)), n * per_row_each
                    ),
                    "copy_1000": _rate(_fan_out(n, _copy_rows, (args.dsn, tables["copy"], each)), n * each),
                    "pipeline": pipeline(env, args.dsn, tables["pipe"], n, each),
                }
                runs.append(run)
                print(
                    f"repetition {rep + 1}: per-row {run['per_row_insert']:,.0f}  COPY {run['copy_1000']:,.0f}  "
                    f"pipeline {run['pipeline']['rows_per_s']:,.0f} rows/s, dropped {run['pipeline']['dropped']}",
                    flush=True,
                )
        finally:
            worker.terminate()
            worker.wait(timeout=60)
            with psycopg.connect(args.dsn, autocommit=True) as conn:
                for table in tables.values():
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
        leftover = len(list((Path(tmp) / "spool").glob("*.batch")))
    per_row = _summary([r["per_row_insert"] for r in runs])
    copy = _summary([r["copy_1000"] for r in runs])
    pipe = _summary([r["pipeline"]["rows_per_s"] for r in runs])
    vs_row = [r["pipeline"]["rows_per_s"] / r["per_row_insert"] for r in runs]
    vs_copy = [r["pipeline"]["rows_per_s"] / r["copy_1000"] for r in runs]
    dropped = sum(r["pipeline"]["dropped"] for r in runs)
    exact = all(r["pipeline"]["rows"] == r["pipeline"]["expected"] for r in runs)
    targets = {
        "pipeline_vs_per_row_insert": {
            "value": round(pipe["median"] / per_row["median"], 1),
            "per_repetition": [round(v, 1) for v in vs_row],
            "target": ">= 10",
            "met": pipe["median"] / per_row["median"] >= 10,
        },
        "pipeline_vs_copy_floor": {
            "value": round(pipe["median"] / copy["median"], 2),
            "per_repetition": [round(v, 2) for v in vs_copy],
            "target": ">= 0.5",
            "met": pipe["median"] / copy["median"] >= 0.5,
        },
        "dropped": {"value": dropped, "target": "0", "met": dropped == 0},
        "exact_rows": {"value": exact, "target": "True", "met": exact},
    }
    print()
    print(f"{n} app processes each way, median of {args.repeat} interleaved repetitions (min-max)")
    print(f"{'path':48} {'rows/s':>10}  spread")
    for label, figures in (
        (f"per-row INSERT + commit, {n} processes", per_row),
        (f"direct COPY batch 1000, {n} processes (floor)", copy),
        (f"pipeline, {n} producers, default settings", pipe),
    ):
        print(f"{label:48} {figures['median']:>10,.0f}  {figures['min']:,.0f}-{figures['max']:,.0f}")
    print(
        f"spilled to the spool and replayed (total): {sum(r['pipeline']['spilled'] for r in runs):,}; "
        f"spool files left: {leftover}"
    )
    for name, value in targets.items():
        print(f"{name}: {value}")
    Path(args.out).write_text(
        json.dumps(
            {
                "benchmark": "pipeline",
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
                "params": {"producers": n, "per_row_each": per_row_each, "each": each, "repeat": args.repeat},
                "runs": runs,
                "summary": {"per_row_insert": per_row, "copy_1000": copy, "pipeline": pipe},
                "spool_files_left": leftover,
                "targets": targets,
                "note": "every figure measured side by side in one run, repetitions interleaved",
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
