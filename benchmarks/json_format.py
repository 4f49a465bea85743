"""Cost per record of flocklog.JSONFormatter against the %-format path and python-json-logger, in one run.

Every formatter formats the same pre-built records (5 µs apart, so many per second and some second boundaries),
one process, no I/O; the formatters are interleaved within each repetition (A, B, C, A, B, C ...) and the median
and spread (min-max) of ns/record are reported, with ratios to the stdlib ``%``-format path of the same round.
Three record shapes: a plain message, a message with three ``extra`` fields, and one with an exception.

    .venv/bin/python benchmarks/json_format.py            # 50,000 records, 7 repetitions
    .venv/bin/python benchmarks/json_format.py --quick    # 10,000 records, 3 repetitions
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flocklog.formatting import Formatter, JSONFormatter

LINE_FORMAT = "%(asctime)s %(levelname)s [PID:%(process)d] %(message)s"
PJL_FIELDS = "%(levelname)s %(name)s %(message)s %(process)d %(processName)s %(thread)d %(threadName)s"


def _formatters() -> dict[str, tuple[str, Callable[[], logging.Formatter]]]:
    made: dict[str, tuple[str, Callable[[], logging.Formatter]]] = {
        "stdlib-percent": ("logging.Formatter (% format, text)", lambda: logging.Formatter(LINE_FORMAT)),
        "flocklog-percent": ("flocklog.Formatter (% format, text)", lambda: Formatter(LINE_FORMAT)),
        "flocklog-json": ("flocklog.JSONFormatter", JSONFormatter),
    }
    try:
        from pythonjsonlogger.json import JsonFormatter
    except ImportError:
        print("skipping python-json-logger: pip install 'flocklog[bench]'", file=sys.stderr)
        return made
    # The same fields as flocklog's, with a UTC timestamp (python-json-logger's own form of it).
    made["pjl"] = ("python-json-logger JsonFormatter", lambda: JsonFormatter(PJL_FIELDS, timestamp=True))
    made["pjl-renamed"] = (
        "python-json-logger, keys renamed like flocklog's",
        lambda: JsonFormatter(
            PJL_FIELDS,
            timestamp="time",
            rename_fields={"levelname": "level", "name": "logger", "process": "pid", "processName": "process_name"},
        ),
    )
    return made


def _records(shape: str, count: int) -> list[logging.LogRecord]:
    start = time.time()
    exc_info = None
    if shape == "exception":
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            exc_info = sys.exc_info()
    out = []
    for i in range(count):
        record = logging.LogRecord("app.orders", logging.INFO, __file__, 10, "order %s shipped", (i,), exc_info)
        record.created = start + i * 5e-6
        record.msecs = int((record.created - int(record.created)) * 1000) + 0.0
        if shape == "extra":
            record.__dict__.update(request_id=f"r-{i}", user_id=i % 97, path="/orders/ship")
        out.append(record)
    return out


def _fresh(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    """Copies, so no formatter profits from another's cached ``exc_text`` or ``message``."""
    return [logging.makeLogRecord(dict(r.__dict__, exc_text=None)) for r in records]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--count", type=int, default=None, help="records per shape (default 50,000)")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions (default 7)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "json_format.json"))
    args = parser.parse_args(argv)
    count = args.count or (10_000 if args.quick else 50_000)
    repeat = max(3, args.repeat or (3 if args.quick else 7))
    formatters = _formatters()
    started = time.time()
    results: list[dict[str, Any]] = []
    for shape in ("plain", "extra", "exception"):
        n = count if shape != "exception" else max(1000, count // 10)
        base = _records(shape, n)
        timings: dict[str, list[float]] = {key: [] for key in formatters}
        for _ in range(repeat):
            for key, (_, factory) in formatters.items():
                records = _fresh(base)
                fmt = factory().format
                began = time.perf_counter()
                for record in records:
                    fmt(record)
                timings[key].append((time.perf_counter() - began) / n * 1e9)
        reference = timings["stdlib-percent"]
        for key, values in timings.items():
            ratios = [v / r for v, r in zip(values, reference, strict=True)]
            results.append(
                {
                    "shape": shape,
                    "formatter": key,
                    "label": formatters[key][0],
                    "records": n,
                    "ns_per_record": round(statistics.median(values), 1),
                    "ns_min": round(min(values), 1),
                    "ns_max": round(max(values), 1),
                    "x_stdlib_percent": round(statistics.median(ratios), 3),
                    "x_stdlib_percent_min": round(min(ratios), 3),
                    "x_stdlib_percent_max": round(max(ratios), 3),
                }
            )
    samples = {}
    record = _records("extra", 1)[0]
    for key, (_, factory) in formatters.items():
        samples[key] = factory().format(_fresh([record])[0])

    from rich.console import Console
    from rich.table import Table

    console = Console(width=130, record=True)
    table = Table(title=f"cost per record of formatters (one process, no I/O; median of {repeat} interleaved reps)")
    for column in ("record", "formatter", "ns/record", "spread", "x stdlib %-format (spread)"):
        table.add_column(column, justify="left" if column in ("record", "formatter") else "right")
    for r in results:
        table.add_row(
            r["shape"],
            r["label"],
            f"{r['ns_per_record']:,.0f}",
            f"{r['ns_min']:,.0f}-{r['ns_max']:,.0f}",
            f"{r['x_stdlib_percent']:.2f} ({r['x_stdlib_percent_min']:.2f}-{r['x_stdlib_percent_max']:.2f})",
        )
    console.print(table)
    for key, line in samples.items():
        console.print(f"{key}: {line}", highlight=False, soft_wrap=True, markup=False)
    out = {
        "benchmark": "json_format",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "params": {"count": count, "repeat": repeat, "line_format": LINE_FORMAT, "pjl_fields": PJL_FIELDS},
        "results": results,
        "samples": samples,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    Path(args.out).with_suffix(".txt").write_text(console.export_text())
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.txt')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
