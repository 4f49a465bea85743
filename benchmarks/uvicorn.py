"""uvicorn --workers 4: requests/s with the stdlib's handler in every worker against flocklog's wrapper, side by side.

The same FastAPI application (``examples/uvicorn_app``: one record per request, plus uvicorn's access line) is
served four ways, each under the same ``wrk`` load on loopback, repeated ``--reps`` times interleaved (the order
turns each repetition) and reported as medians with their spread, plus each variant's ratio to the stdlib run of
the same repetition (median and spread of those paired ratios: the figure to read on a shared machine):

- ``stdlib``: ``uvicorn --log-config`` giving every worker its own ``logging.handlers.RotatingFileHandler`` on one
  file (fast, and unsafe: what the issue measured against);
- ``wrapper-hub``: ``python -m flocklog.contrib.uvicorn`` (the hub process the wrapper starts owns the file, every
  worker sends to it);
- ``wrapper-files``: ``python -m flocklog.contrib.uvicorn --mode files`` (every worker writes the file through
  flocklog's process-safe handler, no hub);
- ``serve-hub``: a separate ``flocklog serve`` process and ``log_config()``.

``wrk`` keeps its connections alive, and the kernel hands each new connection to whichever worker accepts first:
with 16 connections one of the 4 workers was often left with none for a whole run (seen with ``/proc`` CPU times,
in every variant), which swung req/s by 2x between runs. 64 connections spread the load more evenly.

Usage: ``.venv/bin/python benchmarks/uvicorn.py [--reps 5] [--seconds 6]``; a table on stdout and in
benchmarks/results/uvicorn.txt, JSON in benchmarks/results/uvicorn.json. Needs ``wrk`` (``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "uvicorn.json"
APP = ROOT / "examples" / "uvicorn_app"
MAX_BYTES = 1 << 30  # no rotation during a run: this measures the logging path, not rotation
FORMAT = "{levelname} {asctime} {module} [PID:{process}, TID:{thread}] {message}"
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
VARIANTS = ("stdlib", "wrapper-hub", "wrapper-files", "serve-hub")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stdlib_config(log_file: Path) -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": FORMAT, "style": "{"}},
        "handlers": {
            "file": {
                "class": "logging.handlers.RotatingFileHandler",
                "filename": str(log_file),
                "maxBytes": MAX_BYTES,
                "backupCount": 5,
                "formatter": "plain",
            }
        },
        "loggers": {
            name: {"handlers": [], "level": "INFO", "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
        "root": {"handlers": ["file"], "level": "INFO"},
    }


def _start(variant: str, work: Path, port: int, env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    log_file = work / "logs" / "app.log"
    uvicorn_args = ["app:app", "--workers", "4", "--port", str(port)]
    flocklog_args = ["--log-file", str(log_file), "--when", "none", "--max-bytes", str(MAX_BYTES)]
    out = (work / f"{variant}.out").open("ab")
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(args: list[str], extra: dict[str, str] | None = None) -> None:
        procs.append(
            subprocess.Popen(
                args, cwd=APP, env=dict(env, **(extra or {})), stdout=out, stderr=out, start_new_session=True
            )
        )

    if variant == "stdlib":
        config = work / "stdlib.json"
        config.write_text(json.dumps(_stdlib_config(log_file)))
        spawn([sys.executable, "-m", "uvicorn", *uvicorn_args, "--log-config", str(config)])
    elif variant in ("wrapper-hub", "wrapper-files"):
        mode = ["--mode", "files"] if variant == "wrapper-files" else []
        spawn([sys.executable, "-m", "flocklog.contrib.uvicorn", *flocklog_args, *mode, "--", *uvicorn_args])
    elif variant == "serve-hub":
        from flocklog.contrib.uvicorn import log_config
        from flocklog.contrib.uwsgi import hub_config

        sock = work / "hub.sock"
        (work / "hub.json").write_text(json.dumps(hub_config(log_file, when=None, max_bytes=MAX_BYTES)))
        (work / "log.json").write_text(json.dumps(log_config()))
        spawn([sys.executable, "-m", "flocklog", "serve", "--config", str(work / "hub.json"), "--unix", str(sock)])
        _wait(lambda: sock.exists(), "the hub socket")
        extra = {"FLOCKLOG_HUB_ADDRESS": f"unix:{sock}"}
        spawn([sys.executable, "-m", "uvicorn", *uvicorn_args, "--log-config", str(work / "log.json")], extra)
    else:
        raise SystemExit(f"unknown variant {variant}")
    return procs


def _wait(predicate: Any, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def _workers_ready(log_file: Path) -> bool:
    try:
        return log_file.read_text("utf-8", errors="replace").count("Application startup complete") >= 4
    except OSError:
        return False


def _cpu_seconds(pids: list[int]) -> float:
    """User+system CPU of these processes and all their descendants (read from /proc, Linux only)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[2] is ppid, [3] pgrp, [11]/[12] utime/stime
        if int(fields[3]) in pids:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _hub_pid(variant: str, procs: list[subprocess.Popen[bytes]]) -> int | None:
    """The process that runs the hub: ``flocklog serve`` itself, or the wrapper's hub child (in its own session)."""
    if variant == "serve-hub":
        return procs[0].pid
    if variant != "wrapper-hub":
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if ppid == procs[0].pid and b"_hub_child_main" in cmdline:
            return int(entry.name)
    raise SystemExit("wrapper-hub: no hub child found under the wrapper")


def _lines(directory: Path) -> int:
    total = 0
    for path in directory.iterdir():
        with path.open("rb") as fh:
            total += sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    return total


def _own_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_one(variant: str, seconds: float, connections: int, base: Path, env: dict[str, str]) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"{variant}-", dir=base))
    (work / "logs").mkdir()
    port = _free_port()
    procs = _start(variant, work, port, env)
    try:
        _wait(lambda: _workers_ready(work / "logs" / "app.log"), f"{variant}: 4 workers")
        warm = ["wrk", "-t2", f"-c{connections}", "-d1s", f"http://127.0.0.1:{port}/"]
        subprocess.run(warm, capture_output=True, check=True)
        groups = [p.pid for p in procs]
        hub_pid = _hub_pid(variant, procs)
        # The wrapper's hub child has a session (and process group) of its own: counted on top of the groups.
        extra = [hub_pid] if hub_pid is not None and hub_pid not in groups else []
        cpu0 = _cpu_seconds(groups) + sum(_own_cpu_seconds(pid) for pid in extra)
        hub0 = _own_cpu_seconds(hub_pid) if hub_pid is not None else 0.0
        lines0 = _lines(work / "logs")
        cmd = ["wrk", "-t2", f"-c{connections}", f"-d{int(seconds)}s", f"http://127.0.0.1:{port}/"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        cpu = _cpu_seconds(groups) + sum(_own_cpu_seconds(pid) for pid in extra) - cpu0
        hub_cpu = (_own_cpu_seconds(hub_pid) if hub_pid is not None else 0.0) - hub0
        run_lines = _lines(work / "logs") - lines0  # read while the servers run: the hub has written them
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    match = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    total = re.search(r"(\d+) requests in", done.stdout)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", done.stdout)
    assert match and total, done.stdout
    requests = int(total.group(1))
    lines = _lines(work / "logs")
    shutil.rmtree(work, ignore_errors=True)
    return {
        "variant": variant,
        "requests_per_s": float(match.group(1)),
        "requests": requests,
        "cpu_ms_per_request": round(1000 * cpu / max(requests, 1), 3),
        "log_lines": lines,
        # Only for the hub variants: µs of the hub process's CPU per line it wrote.
        "hub_cpu_us_per_line": round(1e6 * hub_cpu / max(run_lines, 1), 1) if variant.endswith("hub") else None,
        "errors": errors.group(0) if errors else None,
    }


def _median(rows: list[dict[str, Any]]) -> dict[str, Any]:
    rps = [r["requests_per_s"] for r in rows]
    cpu = [r["cpu_ms_per_request"] for r in rows]
    hub = [r["hub_cpu_us_per_line"] for r in rows if r.get("hub_cpu_us_per_line") is not None]
    return {
        "hub_cpu_us_per_line": round(statistics.median(hub), 1) if hub else None,
        "variant": rows[0]["variant"],
        "requests_per_s": round(statistics.median(rps), 1),
        "requests_per_s_spread": [round(min(rps), 1), round(max(rps), 1)],
        "cpu_ms_per_request": round(statistics.median(cpu), 3),
        "reps": len(rows),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    variants = args.variants.split(",")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    raw: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="flocklog-bench-uvicorn-") as tmp:
        for rep in range(args.reps):
            order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
            for variant in order:
                row = run_one(variant, args.seconds, args.connections, Path(tmp), env)
                row["rep"] = rep
                raw.append(row)
                print(
                    f"rep {rep} {variant:14} {row['requests_per_s']:>9,.0f} req/s  "
                    f"{row['cpu_ms_per_request']:.3f} ms CPU/request  {row['log_lines']:,} lines"
                    + (f"  hub {row['hub_cpu_us_per_line']} µs CPU/line" if row["hub_cpu_us_per_line"] else ""),
                    flush=True,
                )
    rows = [_median([r for r in raw if r["variant"] == v]) for v in variants]
    # The tenants of a shared machine move every variant of a repetition together far more than they move one
    # against another: the ratio to the same repetition's stdlib run is the figure to read, its median and spread.
    for row in rows:
        paired = [
            r["requests_per_s"] / s["requests_per_s"]
            for r in raw
            if r["variant"] == row["variant"]
            for s in raw
            if s["variant"] == "stdlib" and s["rep"] == r["rep"]
        ]
        if paired:
            row["paired_vs_stdlib"] = round(statistics.median(paired), 2)
            row["paired_vs_stdlib_spread"] = [round(min(paired), 2), round(max(paired), 2)]
    base = next((r for r in rows if r["variant"] == "stdlib"), None)
    table = [
        f"uvicorn --workers 4, wrk -t2 -c{args.connections} -d{int(args.seconds)}s on loopback, {args.reps} interleaved"
        f" reps, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        f"{'variant':14} {'req/s (median)':>15} {'spread':>20} {'vs stdlib':>10} {'paired (spread)':>22}"
        f" {'CPU ms/req':>11} {'hub µs/line':>12}",
    ]
    for row in rows:
        ratio = row["requests_per_s"] / base["requests_per_s"] if base else float("nan")
        lo, hi = row["requests_per_s_spread"]
        if base:
            row["vs_stdlib"] = round(ratio, 2)
            blo, bhi = base["requests_per_s_spread"]
            row["vs_stdlib_spread"] = [round(lo / bhi, 2), round(hi / blo, 2)]
        hub = row["hub_cpu_us_per_line"]
        table.append(
            f"{row['variant']:14} {row['requests_per_s']:>15,.0f} {f'{lo:,.0f}-{hi:,.0f}':>20} {ratio:>9.2f}x"
            f" {row.get('paired_vs_stdlib', float('nan')):>8.2f}x ({row.get('paired_vs_stdlib_spread', '-')!s:>11})"
            f" {row['cpu_ms_per_request']:>11.3f} {'-' if hub is None else hub:>12}"
        )
    print("\n" + "\n".join(table))
    RESULTS.with_suffix(".txt").write_text("\n".join(table) + "\n", encoding="utf-8")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "uvicorn",
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "load": f"wrk -t2 -c{args.connections} -d{int(args.seconds)}s, loopback, 1 s warm-up",
                "reps": args.reps,
                "rows": rows,
                "raw": raw,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
