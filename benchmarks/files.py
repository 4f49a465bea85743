"""Side-by-side file-handler benchmark: raw os.write, stdlib, concurrent-log-handler and flocklog, in one run.

Every configuration writes stamped records from N processes released together; each resulting log set is then
checked by ``flocklog verify``. Repetitions are interleaved (kind A, B, C, A, B, C ...) so that the noise of a
shared machine falls on every kind alike; the median is reported with the spread (min-max) over repetitions, and
each target ratio is also computed within every repetition round (paired), so its spread is visible too.

Each kind is a handler *and* a formatter: ``+std`` is ``logging.Formatter`` with the line format every kind uses,
``+fmt`` is ``flocklog.Formatter`` with the same format (byte-identical lines), ``+msg`` is ``%(message)s`` only —
what the handler costs with almost no formatting. A last section times the formatters alone, in one process
without I/O, so the three parts of a record's cost (formatter, handler, ``os.write``) can be told apart.

Two costs per record: wall (each writer's busy time from the start signal to its last record, as before) and CPU
(the writers' user+system time over their whole lives, from ``RUSAGE_CHILDREN``). On a shared machine the wall
figure also measures other tenants' preemption and swings by 2x between rounds; CPU time swings far less.

    .venv/bin/python benchmarks/files.py            # 4 processes, 5 interleaved repetitions, 20,000 records each
    .venv/bin/python benchmarks/files.py --quick    # 4 processes, 3 repetitions, 5,000 records
    .venv/bin/python benchmarks/files.py --processes 1,2,4,8 --all   # the full sweep, every stdlib/clh kind
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flocklog._benchmark_harness as workload
from flocklog._benchmark_harness import KINDS, LINE_FORMAT, Kind, Workload, available, run_workload
from flocklog.formatting import Formatter
from flocklog.verify import VerifyOptions, verify_paths

FORMATTERS: dict[str, tuple[str, Callable[[], logging.Formatter]]] = {
    "std": ("stdlib fmt", lambda: logging.Formatter(LINE_FORMAT)),
    "fmt": ("flocklog fmt", lambda: Formatter(LINE_FORMAT)),
    "msg": ("%(message)s", lambda: logging.Formatter("%(message)s")),
}

# The kinds of the target table, in the order they run within a repetition round.
TARGET_KINDS = [
    "raw",
    "stdlib-file+std",  # the baseline: the unsafe stdlib FileHandler with the stdlib formatter
    "stdlib-file+fmt",
    "stdlib-file+msg",
    "clh-size+std",
    "flocklog-size+std",
    "flocklog-size+fmt",  # the target: flocklog's handler with its default formatter
    "flocklog-size+msg",
    "flocklog-timed+fmt",
]
MORE_KINDS = ["stdlib-size+std", "stdlib-timed+std", "clh-timed+std", "flocklog-timed+std"]


def _register(name: str) -> None:
    """Make ``handler+formatter`` a workload kind: the harness's kinds are handlers, their formatter fixed."""
    if name in KINDS:
        return
    base, _, formatter = name.partition("+")
    kind = KINDS[base]
    KINDS[name] = Kind(name, f"{kind.label} + {FORMATTERS[formatter][0]}", kind.rotation, kind.needs)


_base_build_handler = workload.build_handler


def _build_handler(work: Workload) -> logging.Handler:
    base, _, formatter = work.kind.partition("+")
    handler = _base_build_handler(dataclasses.replace(work, kind=base))
    if formatter:
        handler.setFormatter(FORMATTERS[formatter][1]())
    return handler


# The writers are forked from this process, so they build their handlers through this wrapper.
workload.build_handler = _build_handler


def _preimport(kinds: list[str]) -> None:
    """Import every handler module here, before the writers fork: the stdlib's ``logging.handlers`` already is.

    Otherwise each writer would import its own (flocklog's files package ~10 ms of CPU, concurrent-log-handler
    ~80 ms), and the CPU figures, taken over the writers' whole lives, would charge that to every record.
    """
    import flocklog.files.handlers  # noqa: F401

    if any(kind.startswith("clh") for kind in kinds):
        import concurrent_log_handler  # noqa: F401


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
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_workload(work, run)  # joins its writers, so their CPU time is in RUSAGE_CHILDREN afterwards
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
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
        "cpu_us_per_record": 1e6 * cpu / result.records if result.records else 0.0,
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
    """Median throughput and cost over repetitions with their spread; defects are summed (any run counts)."""
    merged = dict(rows[0])
    for key in ("records_per_s", "us_per_record", "cpu_us_per_record"):
        values = [r[key] for r in rows]
        merged[key] = statistics.median(values)
        merged[f"{key}_min"] = min(values)
        merged[f"{key}_max"] = max(values)
        merged[f"{key}_all"] = [round(v, 3) for v in values]
    merged["repetitions"] = len(rows)
    for key in ("lost", "duplicated", "torn", "misfiled", "handler_errors"):
        merged[key] = sum(r[key] for r in rows)
    merged["verify_ok"] = all(r["verify_ok"] for r in rows)
    merged["errors"] = [e for r in rows for e in r["errors"]]
    return merged


def _paired(
    runs: dict[str, list[dict[str, Any]]], a: str, b: str, key: str, invert: bool = False
) -> dict[str, Any] | None:
    """The ratio ``a/b`` of ``key`` within each repetition round: its median and spread."""
    if a not in runs or b not in runs:
        return None
    ratios = []
    for ra, rb in zip(runs[a], runs[b], strict=True):
        if ra[key] and rb[key]:
            ratios.append(rb[key] / ra[key] if invert else ra[key] / rb[key])
    if not ratios:
        return None
    return {
        "value": round(statistics.median(ratios), 3),
        "min": round(min(ratios), 3),
        "max": round(max(ratios), 3),
        "rounds": [round(r, 3) for r in ratios],
    }


def _cost(runs: dict[str, list[dict[str, Any]]], a: str, b: str) -> dict[str, Any] | None:
    """``a``'s cost per record over ``b``'s, as wall time (what a caller waits) and as CPU time (what it burns)."""
    wall = _paired(runs, a, b, "us_per_record")
    cpu = _paired(runs, a, b, "cpu_us_per_record")
    if wall is None or cpu is None:
        return None
    return {"wall": wall, "cpu": cpu}


def _targets(runs: dict[str, list[dict[str, Any]]], processes: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
    targets: dict[str, Any] = {"processes": processes}
    cost = _cost(runs, "flocklog-size+fmt", "stdlib-file+std")
    if cost:
        targets["flocklog_with_its_formatter_cost_vs_stdlib_filehandler"] = {
            **cost,
            "target": "<= 1.0",
            "met_wall": cost["wall"]["value"] <= 1.0,
            "met_cpu": cost["cpu"]["value"] <= 1.0,
        }
    speed = _paired(runs, "flocklog-size+fmt", "clh-size+std", "records_per_s")
    if speed:
        targets["flocklog_vs_clh_records_per_s"] = {**speed, "target": ">= 4.0", "met": speed["value"] >= 4.0}
    info = {
        "flocklog_timed_with_its_formatter_cost_vs_stdlib_filehandler": ("flocklog-timed+fmt", "stdlib-file+std"),
        "flocklog_with_stdlib_formatter_cost_vs_stdlib_filehandler": ("flocklog-size+std", "stdlib-file+std"),
        "handler_alone_flocklog_vs_stdlib_filehandler (%(message)s)": ("flocklog-size+msg", "stdlib-file+msg"),
        "formatter_in_place_flocklog_vs_stdlib (stdlib FileHandler)": ("stdlib-file+fmt", "stdlib-file+std"),
        "raw_os_write_floor_vs_stdlib_filehandler": ("raw", "stdlib-file+std"),
        "flocklog_with_its_formatter_cost_vs_raw_os_write": ("flocklog-size+fmt", "raw"),
    }
    for name, (a, b) in info.items():
        ratio = _cost(runs, a, b)
        if ratio:
            targets[name] = {**ratio, "target": "(info)"}
    at = {r["kind"]: r for r in rows}
    if "flocklog-size+msg" in at and "stdlib-file+msg" in at:
        targets["handler_alone_extra_us_per_record"] = {
            "wall": round(at["flocklog-size+msg"]["us_per_record"] - at["stdlib-file+msg"]["us_per_record"], 2),
            "cpu": round(at["flocklog-size+msg"]["cpu_us_per_record"] - at["stdlib-file+msg"]["cpu_us_per_record"], 2),
            "target": "(info)",
        }
    flocklog_clean = all(r["verify_ok"] for r in rows if r["kind"].startswith("flocklog"))
    targets["flocklog_verify_clean"] = {"value": flocklog_clean, "target": "True", "met": flocklog_clean}
    return targets


def _formatter_alone(records: int, repeat: int) -> list[dict[str, Any]]:
    """ns per ``format()`` in one process, no I/O: records 5 µs apart (many per second, crossing seconds)."""
    start = time.time()
    made = []
    for i in range(records):
        record = logging.LogRecord("flocklog.workload.p0", logging.INFO, __file__, 1, "flk1 run p0 %d", (i,), None)
        record.created = start + i * 5e-6
        record.msecs = int((record.created - int(record.created)) * 1000) + 0.0
        made.append(record)
    timings: dict[str, list[float]] = {name: [] for name in FORMATTERS}
    for _ in range(repeat):
        for name, (_, factory) in FORMATTERS.items():
            formatter = factory()
            fmt = formatter.format
            began = time.perf_counter()
            for record in made:
                fmt(record)
            timings[name].append((time.perf_counter() - began) / records * 1e9)
    return [
        {
            "formatter": FORMATTERS[name][0],
            "key": name,
            "ns_per_record": round(statistics.median(values), 1),
            "ns_min": round(min(values), 1),
            "ns_max": round(max(values), 1),
        }
        for name, values in timings.items()
    ]


def _print_table(rows: list[dict[str, Any]], alone: list[dict[str, Any]], console: Any) -> None:
    from rich.table import Table

    table = Table(title="file handlers: N processes writing one log set (median of interleaved repetitions)")
    columns = (
        "procs",
        "handler + formatter",
        "records/s",
        "µs/record",
        "µs spread",
        "x FileHandler",
        "CPU µs/record",
        "CPU x FH",
        "lost",
        "dup",
        "torn",
        "misfiled",
        "verify",
    )
    for column in columns:
        table.add_column(column, justify="left" if column.startswith("handler") else "right")
    base = {r["processes"]: r for r in rows if r["kind"] == "stdlib-file+std"}
    for r in rows:
        ref = base.get(r["processes"])
        ratio = r["us_per_record"] / ref["us_per_record"] if ref and ref["us_per_record"] else float("nan")
        cpu_base = ref["cpu_us_per_record"] if ref else 0.0
        cpu_ratio = r["cpu_us_per_record"] / cpu_base if cpu_base else float("nan")
        table.add_row(
            str(r["processes"]),
            r["label"],
            f"{r['records_per_s']:,.0f}",
            f"{r['us_per_record']:.2f}",
            f"{r['us_per_record_min']:.2f}-{r['us_per_record_max']:.2f}",
            f"{ratio:.2f}",
            f"{r['cpu_us_per_record']:.2f}",
            f"{cpu_ratio:.2f}",
            str(r["lost"]),
            str(r["duplicated"]),
            str(r["torn"]),
            str(r["misfiled"]),
            "clean" if r["verify_ok"] else "DEFECTS",
        )
    console.print(table)
    small = Table(title="formatters alone: one process, no I/O")
    for column in ("formatter", "ns/record", "spread"):
        small.add_column(column, justify="left" if column == "formatter" else "right")
    for a in alone:
        small.add_row(a["formatter"], f"{a['ns_per_record']:,.0f}", f"{a['ns_min']:,.0f}-{a['ns_max']:,.0f}")
    console.print(small)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 repetitions, 5,000 records per writer")
    parser.add_argument("--processes", default="4", help="comma-separated, default 4 (the targets' setting)")
    parser.add_argument("--count", type=int, default=None, help="records per writer (default 20,000)")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions (default 5, at least 3)")
    parser.add_argument("--all", action="store_true", help="also the stdlib/clh rotating kinds (defect columns)")
    parser.add_argument("--kinds", default=None, help="comma-separated kinds (handler+formatter)")
    parser.add_argument("--max-bytes", type=int, default=1024 * 1024, help="size rotation threshold")
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "files.json"))
    args = parser.parse_args(argv)

    processes = [int(p) for p in args.processes.split(",")]
    count = args.count or (5_000 if args.quick else 20_000)
    repeat = max(3, args.repeat or (3 if args.quick else 5))
    kinds = args.kinds.split(",") if args.kinds else TARGET_KINDS + (MORE_KINDS if args.all else [])
    for kind in kinds:
        if kind != "raw":
            _register(kind)
    missing = [k for k in kinds if not available(k)]
    if missing:
        print(
            f"skipping {', '.join(missing)}: install the bench extra (pip install 'flocklog[bench]')", file=sys.stderr
        )
        kinds = [k for k in kinds if k not in missing]
    _preimport(kinds)
    root = Path(args.dir or tempfile.mkdtemp(prefix="flocklog-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.time()
    rows: list[dict[str, Any]] = []
    runs_at: dict[int, dict[str, list[dict[str, Any]]]] = {}
    try:
        for procs in processes:
            runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
            for rep in range(repeat):
                for kind in kinds:
                    print(f"  {procs} procs, rep {rep + 1}/{repeat}: {kind} ...", file=sys.stderr, flush=True)
                    runs[kind].append(_one(kind, procs, count, args.max_bytes, root))
            rows.extend(_median_row(runs[k]) for k in kinds)
            runs_at[procs] = runs
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    alone = _formatter_alone(count, repeat)
    from rich.console import Console

    console = Console(width=190, record=True)
    _print_table(rows, alone, console)
    target_procs = 4 if 4 in processes else processes[-1]
    targets = _targets(runs_at[target_procs], target_procs, [r for r in rows if r["processes"] == target_procs])
    for name, value in targets.items():
        console.print(f"{name}: {value}", highlight=False, soft_wrap=True)
    out = {
        "benchmark": "files",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "params": {
            "processes": processes,
            "count_per_writer": count,
            "repeat": repeat,
            "max_bytes": args.max_bytes,
            "line_format": LINE_FORMAT,
        },
        "results": rows,
        "formatters_alone": alone,
        "targets": targets,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    Path(args.out).with_suffix(".txt").write_text(console.export_text())
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.txt')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
