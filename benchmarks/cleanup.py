"""Retention on PostgreSQL: one big DELETE vs flocklog's batched cleanup vs dropping daily partitions.

Each run fills a fresh table with R rows spread evenly over 30 days and removes the oldest 10 days (a third).
Reported: wall seconds, rows/s, WAL bytes written (``pg_current_wal_lsn()`` before/after; the server is shared,
so other sessions' WAL adds noise) and the longest single transaction (what a concurrent writer or vacuum may
wait behind). Usage: ``.venv/bin/python benchmarks/cleanup.py [--rows N] [--repeat K] [--dsn URL]``;
JSON goes to benchmarks/results/cleanup.json, the table to benchmarks/results/cleanup.txt.

``--progression [--rows 1500000] [--quick]``: one table of R rows over 2 years, the batched keyset age delete of
the older year, every batch timed: does a batch near the end cost what the first did? (A delete that re-walks the
index entries of rows it already deleted gets slower as it goes.) Results in cleanup_progression.json/.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from flocklog.store.cleanup import cleanup

RESULTS = Path(__file__).resolve().parent / "results"
NOW = datetime(2026, 1, 31, tzinfo=timezone.utc)
DAYS = 30
DROP_DAYS = 10

DDL = """
CREATE TABLE {t} (
  id uuid NOT NULL, ts timestamptz NOT NULL, level smallint NOT NULL, logger text NOT NULL DEFAULT '',
  message text NOT NULL, fields jsonb NOT NULL DEFAULT '{{}}'::jsonb, host text NOT NULL DEFAULT '',
  pid integer NOT NULL DEFAULT 0, inserted_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (id, ts)
) {partition}
"""


def fill(conn: psycopg.Connection[Any], name: str, rows: int, partitioned: bool) -> None:
    conn.execute(DDL.format(t=name, partition="PARTITION BY RANGE (ts)" if partitioned else ""))
    if partitioned:
        for d in range(DAYS):
            start = NOW - timedelta(days=DAYS - d)
            conn.execute(
                f"CREATE TABLE {name}_p{start:%Y%m%d} PARTITION OF {name} "
                f"FOR VALUES FROM ('{start.isoformat()}') TO ('{(start + timedelta(days=1)).isoformat()}')"
            )
        conn.execute(f"CREATE TABLE {name}_default PARTITION OF {name} DEFAULT")
    conn.execute(f"CREATE INDEX ON {name} (ts)")
    span = DAYS * 86400
    conn.execute(
        f"INSERT INTO {name} (id, ts, level, logger, message, fields) "
        "SELECT gen_random_uuid(), %s::timestamptz - make_interval(secs => (g::float8 * %s / %s)), 20, 'bench', "
        "'task finished in ' || g || ' ms', jsonb_build_object('n', g, 'queue', 'default') "
        "FROM generate_series(1, %s) g",
        (NOW, span, rows, rows),
    )
    conn.execute(f"VACUUM ANALYZE {name}")
    conn.execute("CHECKPOINT")  # every method starts after a checkpoint: same full-page-write cost


def wal(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return int(row[0])


def run_one(dsn: str, method: str, rows: int) -> dict[str, Any]:
    name = f"flk_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        fill(conn, name, rows, partitioned=method == "partition drop")
        cutoff = NOW - timedelta(days=DAYS - DROP_DAYS)
        before = wal(conn)
        longest = 0.0
        started = time.perf_counter()
        if method == "one DELETE":
            deleted = conn.execute(f"DELETE FROM {name} WHERE ts < %s", (cutoff,)).rowcount
            longest = time.perf_counter() - started
        else:
            last = [started]

            def on_batch(_method: str, _batch: int, _rows: int) -> None:
                nonlocal longest
                now = time.perf_counter()
                longest = max(longest, now - last[0])
                last[0] = now

            result = cleanup(dsn, days=DAYS - DROP_DAYS, table=name, now=NOW, on_batch=on_batch)
            deleted = result.deleted
        seconds = time.perf_counter() - started
        wal_bytes = wal(conn) - before
        conn.execute(f"DROP TABLE {name} CASCADE")
    return {
        "method": method,
        "rows": rows,
        "deleted": deleted,
        "seconds": seconds,
        "wal_bytes": wal_bytes,
        "rows_per_s": deleted / seconds,
        "longest_txn_s": longest,
    }


def _fill_span(conn: psycopg.Connection[Any], name: str, rows: int, days: int) -> None:
    conn.execute(DDL.format(t=name, partition=""))
    conn.execute(f"CREATE INDEX ON {name} (ts)")
    conn.execute(
        f"INSERT INTO {name} (id, ts, level, logger, message, fields) "
        "SELECT gen_random_uuid(), %s::timestamptz - make_interval(secs => (g::float8 * %s / %s)), 20, 'bench', "
        "'task finished in ' || g || ' ms', jsonb_build_object('n', g, 'queue', 'default') "
        "FROM generate_series(1, %s) g",
        (NOW, days * 86400, rows, rows),
    )
    conn.execute(f"VACUUM ANALYZE {name}")
    conn.execute("CHECKPOINT")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def progression(dsn: str, rows: int) -> dict[str, Any]:
    """Time every batch of the keyset age delete of the older half of a 2-year table."""
    days = 730
    name = f"flk_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        _fill_span(conn, name, rows, days)
        fill_s = time.perf_counter() - started
        times: list[float] = []
        last = [time.perf_counter()]

        def on_batch(_method: str, _batch: int, _rows: int) -> None:
            now = time.perf_counter()
            times.append(now - last[0])
            last[0] = now

        try:
            last[0] = started = time.perf_counter()
            result = cleanup(dsn, days=365, table=name, now=NOW, on_batch=on_batch)
            seconds = time.perf_counter() - started
        finally:
            conn.execute(f"DROP TABLE {name}")
    tenth = max(1, len(times) // 10)
    first_tenth, last_tenth = statistics.median(times[:tenth]), statistics.median(times[-tenth:])
    return {
        "rows": rows,
        "days": days,
        "deleted": result.deleted,
        "batches": len(times),
        "fill_s": fill_s,
        "seconds": seconds,
        "rows_per_s": result.deleted / seconds,
        "first_batch_ms": times[0] * 1000,
        "last_batch_ms": times[-1] * 1000,
        "first_tenth_median_ms": first_tenth * 1000,
        "last_tenth_median_ms": last_tenth * 1000,
        "last_vs_first_tenth": last_tenth / first_tenth,
        "tenths_median_ms": [
            round(statistics.median(times[i * tenth : (i + 1) * tenth]) * 1000, 2) for i in range(len(times) // tenth)
        ],
        "p50_ms": _pct(times, 0.5) * 1000,
        "p90_ms": _pct(times, 0.9) * 1000,
        "p99_ms": _pct(times, 0.99) * 1000,
        "max_ms": max(times) * 1000,
        "batch_ms": [round(t * 1000, 2) for t in times],
    }


def main_progression(args: argparse.Namespace) -> None:
    rows = 300_000 if args.quick else args.rows
    run = progression(args.dsn, rows)
    text = "\n".join(
        [
            f"Keyset age delete: {run['rows']:,} rows over {run['days']} days, rows older than 365 days deleted "
            f"in batches of 5000 (fill {run['fill_s']:.1f} s, not counted)",
            f"deleted {run['deleted']:,} in {run['batches']} batches, {run['seconds']:.1f} s, "
            f"{run['rows_per_s']:,.0f} rows/s",
            f"first batch {run['first_batch_ms']:.1f} ms, last batch {run['last_batch_ms']:.1f} ms; median of the "
            f"first tenth {run['first_tenth_median_ms']:.1f} ms, of the last tenth {run['last_tenth_median_ms']:.1f} "
            f"ms ({run['last_vs_first_tenth']:.2f}x)",
            f"per batch: p50 {run['p50_ms']:.1f} ms, p90 {run['p90_ms']:.1f} ms, p99 {run['p99_ms']:.1f} ms, "
            f"max {run['max_ms']:.1f} ms",
            f"median batch of each tenth of the run, in order (ms): {run['tenths_median_ms']}",
        ]
    )
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cleanup_progression.txt").write_text(text + "\n")
    machine = {"python": platform.python_version(), "platform": platform.platform(), "load": os.getloadavg()}
    (RESULTS / "cleanup_progression.json").write_text(json.dumps({"machine": machine, **run}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--progression", action="store_true", help="1.5M rows over 2 years, every batch timed")
    parser.add_argument("--quick", action="store_true", help="with --progression: 300k rows")
    args = parser.parse_args()
    if args.progression:
        args.rows = args.rows or 1_500_000
        main_progression(args)
        return
    args.rows = args.rows or 300_000
    methods = ["one DELETE", "batched (5000)", "partition drop"]
    runs: list[dict[str, Any]] = []
    for rep in range(args.repeat):  # interleaved, so drift on the shared machine hits every method alike
        for method in methods:
            run = run_one(args.dsn, method, args.rows)
            run["repeat"] = rep
            runs.append(run)
            print(f"  {method:16} rep {rep}: {run['seconds']:.2f}s", file=sys.stderr)
    summary = []
    for method in methods:
        mine = [r for r in runs if r["method"] == method]
        summary.append(
            {
                "method": method,
                "deleted": mine[0]["deleted"],
                "seconds_median": statistics.median(r["seconds"] for r in mine),
                "rows_per_s_median": statistics.median(r["rows_per_s"] for r in mine),
                "wal_mib_median": statistics.median(r["wal_bytes"] for r in mine) / 2**20,
                "longest_txn_s_max": max(r["longest_txn_s"] for r in mine),
            }
        )
    lines = [
        f"Retention benchmark: {args.rows} rows over {DAYS} days, oldest {DROP_DAYS} days removed, "
        f"{args.repeat} interleaved repetitions (medians; longest transaction: max)",
        f"{'method':16} {'deleted':>8} {'seconds':>8} {'rows/s':>10} {'WAL MiB':>8} {'longest txn s':>14}",
    ]
    for s in summary:
        lines.append(
            f"{s['method']:16} {s['deleted']:>8} {s['seconds_median']:>8.2f} {s['rows_per_s_median']:>10.0f} "
            f"{s['wal_mib_median']:>8.2f} {s['longest_txn_s_max']:>14.3f}"
        )
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cleanup.txt").write_text(text + "\n")
    (RESULTS / "cleanup.json").write_text(
        json.dumps(
            {
                "machine": {"python": platform.python_version(), "platform": platform.platform()},
                "rows": args.rows,
                "days": DAYS,
                "dropped_days": DROP_DAYS,
                "summary": summary,
                "runs": runs,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
