"""What ``ExecutionLogger.log()`` costs the caller: the real pipeline against a transport that ships nothing.

    .venv/bin/python benchmarks/pipeline_logger.py [--repeat 5] [--quick] [--dsn postgresql://...] [--redis redis://...]

The honest way to separate the pipeline's cost from the machine's noise: the same producers, the same workload, the
same moment, once with the real transport (Celery on Redis, a worker writing to PostgreSQL, default settings, so a
burst bigger than ``capacity`` spills to the spool) and once with a transport whose ``send`` does nothing. Modes are
interleaved (real, discard, real, discard ...) so drifting machine load hits both alike; each mode's figure is the
median over the repetitions, with the spread (min-max) beside it. ``log()`` is timed with ``perf_counter_ns``
around each call in each of 4 forked producers (flat out: 20,000 records each; paced: 2,000 records/s each).
Target (issue #11): real p99 within 1.2x of the discard p99, flat out and paced.
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

from _preload import preload_transport  # benchmarks/, beside this script

from flocklog.pipeline.transports import worker_command

PRODUCERS = 4


class _Discard:
    """A transport that ships nothing: what buffering and checking alone cost the caller."""

    name = "discard"

    def send(self, records: Any, batch_id: str | None = None) -> None:
        pass

    def close(self) -> None:
        pass


def _producer(env: dict[str, str], count: int, rate: float | None, discard: bool, out: Any) -> None:
    os.environ.update(env)
    from flocklog.pipeline.logger import ExecutionLogger

    logger = ExecutionLogger("bench", transport=_Discard() if discard else "celery")
    lat = []
    first = time.perf_counter()
    for i in range(count):
        if rate is not None:
            pause = first + i / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)  # the rest of a request: I/O waits, during which the sender runs
        t = time.perf_counter_ns()
        logger.info("request handled", n=i, path="/api/orders", user="u-123")
        lat.append(time.perf_counter_ns() - t)
    logger.close(timeout=120)
    out.put((lat, logger.stats()))


def _run(env: dict[str, str], count: int, rate: float | None, discard: bool) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")
    out: Any = ctx.Queue()
    procs = [ctx.Process(target=_producer, args=(env, count, rate, discard, out)) for _ in range(PRODUCERS)]
    for proc in procs:
        proc.start()
    reports = [out.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
    lat = sorted(ns for report, _ in reports for ns in report)
    return {
        "p50_us": lat[len(lat) // 2] / 1000,
        "p99_us": lat[int(len(lat) * 0.99)] / 1000,
        "p999_us": lat[int(len(lat) * 0.999)] / 1000,
        "dropped": sum(stats.get("dropped", 0) for _, stats in reports),
        "spilled": sum(stats.get("spilled", 0) for _, stats in reports),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test")
    args = parser.parse_args(argv)
    flat_each, paced_each, rate = (5000, 1000, 2000.0) if args.quick else (20_000, 4000, 2000.0)
    workdir = Path(tempfile.mkdtemp(prefix="flocklog-bench-logger-"))
    table = f"bench_logger_{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "FLOCKLOG_BROKER_URL": args.redis,
        "FLOCKLOG_DATABASE_URL": args.dsn,
        "FLOCKLOG_TABLE": table,
        "FLOCKLOG_SPOOL_DIR": str(workdir / "spool"),
        "FLOCKLOG_DEAD_LETTER_DIR": str(workdir / "dead"),
    }
    worker = subprocess.Popen(
        worker_command("--concurrency", "2", "-l", "warning", "--without-gossip", "--without-mingle"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(4)  # worker start-up is not part of the measurement
    preload_transport(args.redis)  # as in a web app's master process; see _preload.py

    modes = {
        "flat out": (flat_each, None),
        "paced 2,000/s": (paced_each, rate),
    }
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {m: {"real": [], "discard": []} for m in modes}
    try:
        for _ in range(args.repeat):
            for mode, (each, pace) in modes.items():
                for kind in ("real", "discard"):
                    runs[mode][kind].append(_run(env, each, pace, kind == "discard"))
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        try:
            import psycopg

            with psycopg.connect(args.dsn, autocommit=True) as conn:
                conn.execute(f"DROP TABLE IF EXISTS {table}")
        except Exception as exc:
            print(f"could not drop {table}: {exc}", file=sys.stderr)

    summary: dict[str, Any] = {}
    lines = [
        "| `log()` in the caller | p50 µs | p99 µs (median; spread) | p99.9 µs | p99 real / discard | dropped |",
        "|---|---|---|---|---|---|",
    ]
    for mode in modes:
        p99 = {}
        for kind in ("real", "discard"):
            reps = runs[mode][kind]
            p99s = [r["p99_us"] for r in reps]
            p99[kind] = statistics.median(p99s)
            summary[f"{mode} / {kind}"] = {
                "p50_us": statistics.median(r["p50_us"] for r in reps),
                "p99_us": p99[kind],
                "p99_spread_us": [min(p99s), max(p99s)],
                "p999_us": statistics.median(r["p999_us"] for r in reps),
                "dropped": sum(r["dropped"] for r in reps),
                "spilled": sum(r["spilled"] for r in reps),
                "runs": reps,
            }
        for kind in ("real", "discard"):
            s = summary[f"{mode} / {kind}"]
            ratio = f"{p99['real'] / p99['discard']:.2f}x" if kind == "real" else "(reference)"
            lines.append(
                f"| {mode}, {'Celery + worker' if kind == 'real' else 'ships nothing'} | {s['p50_us']:.1f} | "
                f"{s['p99_us']:.1f} ({s['p99_spread_us'][0]:.1f}-{s['p99_spread_us'][1]:.1f}) | {s['p999_us']:.0f} | "
                f"{ratio} | {s['dropped']} |"
            )
    table_text = "\n".join(lines)
    print(table_text)
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    name = "pipeline_logger_quick.json" if args.quick else "pipeline_logger.json"
    (results / name).write_text(
        json.dumps(
            {
                "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load": os.getloadavg()},
                "producers": PRODUCERS,
                "repeat": args.repeat,
                "summary": summary,
                "table": table_text,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
