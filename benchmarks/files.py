"""Side-by-side file-handler benchmark: raw os.write, stdlib, concurrent-log-handler and flocklog, in one run.

Every configuration writes stamped records from N processes released together; each resulting log set is then
checked by ``flocklog verify``. Repetitions are interleaved (kind A, B, C, A, B, C ...) so that the noise of a
shared machine falls on every kind alike, and the median is reported. Ratios, not absolute numbers, are the result.

    .venv/bin/python benchmarks/files.py            # full: 1/2/4/8 processes, 3 repetitions
    .venv/bin/python benchmarks/files.py --quick    # 4 processes, 1 repetition, fewer records
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from flocklog._benchmark_harness import KINDS, Workload, available, run_workload
from flocklog.verify import VerifyOptions, verify_paths

ALL_KINDS = [
    "raw",
    "stdlib-file",
    "stdlib-size",
    "clh-size",
    "flocklog-size",
    "stdlib-timed",
    "clh-timed",
    "flocklog-timed",
]


def _one(kind: str, processes: int, count: int, max_bytes: int, root: Path) -> dict[str, Any]:
    directory = root / f"{kind}-{processes}-{uuid.uuid4().hex[:6]}"
    work = Workload(
        kind=kind,
        directory=directory,
        processes=processes,
        count=count,
        payload_size=64,
        max_bytes=max_bytes,
        backup_count=2000,
        when="S",
    )
    run = uuid.uuid4().hex[:10]
    result = run_workload(work, run)
    timed = KINDS[kind].rotation == "time"
    report = verify_paths(
        [str(work.log_path)],
        VerifyOptions(
            expected_counts={f"p{i}": count for i in range(processes)},
            writers=processes,
            run=run,
            when="S" if timed else None,
            allow_expired=False,
        ),
    )
    shutil.rmtree(directory, ignore_errors=True)
    return {
        "kind": kind,
        "label": KINDS[kind].label,
        "processes": processes,
        "records": result.records,
        "seconds": result.seconds,
        "records_per_s": result.records_per_second,
        "us_per_record": result.us_per_record,
        "lost": report.lost,
        "duplicated": report.duplicated,
        "torn": report.torn,
        "misfiled": report.interval_violations + report.split_intervals,
        "archives": report.archives,
        "handler_errors": result.handler_errors,
        "verify_ok": report.ok,
        "errors": result.errors,
    }


def _median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median throughput and cost over repetitions; defects are summed (any defect in any run counts)."""
    merged = dict(rows[0])
    merged["records_per_s"] = statistics.median(r["records_per_s"] for r in rows)
    merged["us_per_record"] = statistics.median(r["us_per_record"] for r in rows)
    merged["repetitions"] = len(rows)
    for key in ("lost", "duplicated", "torn", "misfiled", "handler_errors"):
        merged[key] = sum(r[key] for r in rows)
    merged["verify_ok"] = all(r["verify_ok"] for r in rows)
    merged["errors"] = [e for r in rows for e in r["errors"]]
    return merged


def _targets(rows: list[dict[str, Any]], processes: int) -> dict[str, Any]:
    at = {r["kind"]: r for r in rows if r["processes"] == processes}
    targets: dict[str, Any] = {"processes": processes}
    if "flocklog-size" in at and "clh-size" in at and at["clh-size"]["records_per_s"]:
        ratio = at["flocklog-size"]["records_per_s"] / at["clh-size"]["records_per_s"]
        targets["flocklog_vs_clh_records_per_s"] = {"value": round(ratio, 2), "target": ">= 3.0", "met": ratio >= 3}
    if "flocklog-timed" in at and "clh-timed" in at and at["clh-timed"]["records_per_s"]:
        ratio = at["flocklog-timed"]["records_per_s"] / at["clh-timed"]["records_per_s"]
        targets["flocklog_timed_vs_clh_timed_records_per_s"] = {"value": round(ratio, 2), "target": "(info)"}
    if "flocklog-size" in at and "stdlib-file" in at and at["stdlib-file"]["us_per_record"]:
        ratio = at["flocklog-size"]["us_per_record"] / at["stdlib-file"]["us_per_record"]
        targets["flocklog_cost_vs_stdlib_filehandler"] = {
            "value": round(ratio, 2),
            "target": "<= 1.3",
            "met": ratio <= 1.3,
        }
    if "flocklog-size" in at and "raw" in at and at["raw"]["us_per_record"]:
        ratio = at["flocklog-size"]["us_per_record"] / at["raw"]["us_per_record"]
        targets["flocklog_cost_vs_raw_os_write"] = {"value": round(ratio, 2), "target": "(info)"}
    flocklog_clean = all(r["verify_ok"] for r in rows if r["kind"].startswith("flocklog"))
    targets["flocklog_verify_clean"] = {"value": flocklog_clean, "target": "True", "met": flocklog_clean}
    return targets


def _print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="file handlers: N processes writing one log set (median of repetitions)")
    columns = (
        "procs",
        "handler",
        "records/s",
        "µs/record",
        "x FileHandler",
        "lost",
        "dup",
        "torn",
        "misfiled",
        "verify",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "handler" else "right")
    base = {r["processes"]: r["us_per_record"] for r in rows if r["kind"] == "stdlib-file"}
    for r in rows:
        ratio = r["us_per_record"] / base[r["processes"]] if base.get(r["processes"]) else float("nan")
        table.add_row(
            str(r["processes"]),
            r["label"],
            f"{r['records_per_s']:,.0f}",
            f"{r['us_per_record']:.2f}",
            f"{ratio:.2f}",
            str(r["lost"]),
            str(r["duplicated"]),
            str(r["torn"]),
            str(r["misfiled"]),
            "clean" if r["verify_ok"] else "DEFECTS",
        )
    Console(width=160).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 processes, 1 repetition, 5,000 records per writer")
    parser.add_argument("--processes", default=None, help="comma-separated, default 1,2,4,8")
    parser.add_argument("--count", type=int, default=None, help="records per writer (default 20,000)")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions (default 3)")
    parser.add_argument("--kinds", default=",".join(ALL_KINDS))
    parser.add_argument("--max-bytes", type=int, default=1024 * 1024, help="size rotation threshold")
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "files.json"))
    args = parser.parse_args(argv)

    processes = [int(p) for p in (args.processes or ("4" if args.quick else "1,2,4,8")).split(",")]
    count = args.count or (5_000 if args.quick else 20_000)
    repeat = args.repeat or (1 if args.quick else 3)
    kinds = [k for k in args.kinds.split(",") if k]
    missing = [k for k in kinds if not available(k)]
    if missing:
        print(
            f"skipping {', '.join(missing)}: install the bench extra (pip install 'flocklog[bench]')", file=sys.stderr
        )
        kinds = [k for k in kinds if k not in missing]
    root = Path(args.dir or tempfile.mkdtemp(prefix="flocklog-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.time()
    rows: list[dict[str, Any]] = []
    try:
        for procs in processes:
            runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
            for rep in range(repeat):
                for kind in kinds:
                    print(f"  {procs} procs, rep {rep + 1}/{repeat}: {kind} ...", file=sys.stderr, flush=True)
                    runs[kind].append(_one(kind, procs, count, args.max_bytes, root))
            rows.extend(_median_row(runs[k]) for k in kinds)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    _print_table(rows)
    target_procs = 4 if 4 in processes else processes[-1]
    targets = _targets(rows, target_procs)
    for name, value in targets.items():
        print(f"{name}: {value}")
    out = {
        "benchmark": "files",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "params": {"processes": processes, "count_per_writer": count, "repeat": repeat, "max_bytes": args.max_bytes},
        "results": rows,
        "targets": targets,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
