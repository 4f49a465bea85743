"""What forked workers lose with the OpenTelemetry SDK set up in the parent, and what they keep through the hub.

Every scenario forks W workers (``multiprocessing``, fork start method, as prefork servers do) that each log N
stamped records and return; a loopback OTLP/HTTP receiver (the tests' one, decoding with opentelemetry-proto)
counts what arrives. Scenarios:

- ``sdk_in_parent``: what users do today: ``LoggerProvider`` + ``BatchLogRecordProcessor`` + ``OTLPLogExporter``
  + the SDK's ``LoggingHandler`` on the root logger, set up in the parent before the fork. The SDK re-creates its
  batch thread in each child, but a worker leaves through ``os._exit`` (multiprocessing, and prefork servers'
  workers), so the SDK's ``atexit`` shutdown never runs and what is still batched is lost.
- ``sdk_in_parent_sigterm``: the same, workers stopped by SIGTERM while logging (a deploy, a scale-down).
- ``hub``: the workers log through ``flocklog.HubHandler`` (also set up in the parent before the fork) to
  ``flocklog serve``, whose ``OTLPHandler`` alone exports.

Reported: records expected (for the SIGTERM case: logged before the signal, as the workers count them), received,
lost, duplicated. Usage: ``.venv/bin/python benchmarks/otel_fork.py [--workers 4] [--records 2000]``; JSON goes
to benchmarks/results/otel_fork.json, the table to benchmarks/results/otel_fork.txt.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import multiprocessing
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "sinks"))

from otlpreceiver import Receiver  # the tests' loopback receiver

from flocklog.hub import HubHandler, query_status
from flocklog.testing import StampFilter, parse_stamp, write_stamped

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _worker(run: str, writer: str, count: int, progress: Any) -> None:
    logger = logging.getLogger(f"bench.{writer}")
    write_stamped(logger, run=run, writer=writer, count=count, payload_size=16, on_record=lambda n: _tick(progress, n))


def _tick(progress: Any, n: int) -> None:
    progress.value = n


def _fork_workers(run: str, workers: int, count: int, *, sigterm_after: int | None = None) -> list[int]:
    """Fork the workers from this (configured) parent; return how many records each logged."""
    ctx = multiprocessing.get_context("fork")
    progress = [ctx.Value("q", 0, lock=False) for _ in range(workers)]
    procs = [ctx.Process(target=_worker, args=(run, f"w{i}", count, progress[i])) for i in range(workers)]
    for p in procs:
        p.start()
    if sigterm_after is not None:
        deadline = time.monotonic() + 120
        while min(v.value for v in progress) < sigterm_after and time.monotonic() < deadline:
            time.sleep(0.01)
        for p in procs:
            if p.pid is not None:
                os.kill(p.pid, signal.SIGTERM)
    for p in procs:
        p.join(120)
    return [int(v.value) for v in progress]


def _root_with(handler: logging.Handler) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    handler.addFilter(StampFilter())


def _settle(receiver: Receiver, run: str, expected: int, timeout: float) -> None:
    """Wait until ``expected`` arrived or nothing new arrived for 3 s (what is lost never comes)."""
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        now_count = receiver.count(run)
        if now_count >= expected:
            return
        if now_count != last:
            last, last_change = now_count, time.monotonic()
        elif time.monotonic() - last_change > 3.0:
            return
        time.sleep(0.1)


def _tally(receiver: Receiver, run: str) -> tuple[int, int]:
    seen: collections.Counter[tuple[str, int]] = collections.Counter()
    for r in receiver.snapshot():
        stamp = parse_stamp(str(r["body"]))
        if stamp is not None and stamp.run == run:
            seen[(stamp.writer, stamp.seq)] += 1
    return len(seen), sum(v - 1 for v in seen.values())


def run_sdk(receiver: Receiver, workers: int, count: int, *, sigterm: bool) -> dict[str, Any]:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    run = f"sdk{os.urandom(4).hex()}"
    provider = LoggerProvider(resource=Resource.create({"service.name": "bench"}))
    provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=receiver.endpoint)))
    _root_with(LoggingHandler(logger_provider=provider))
    logged = _fork_workers(run, workers, count, sigterm_after=count // 4 if sigterm else None)
    expected = sum(logged)
    _settle(receiver, run, expected, 60)
    provider.shutdown()
    received, dups = _tally(receiver, run)
    name = "sdk_in_parent_sigterm" if sigterm else "sdk_in_parent"
    return {"scenario": name, "expected": expected, "received": received, "lost": expected - received, "dup": dups}


def run_hub(receiver: Receiver, workers: int, count: int) -> dict[str, Any]:
    run = f"hub{os.urandom(4).hex()}"
    tmp = Path(tempfile.mkdtemp(prefix="flocklog-bench-otel-"))
    config = {
        "version": 1,
        "handlers": {
            "otlp": {
                "class": "flocklog.hub.sinks.OTLPHandler",
                "endpoint": receiver.endpoint,
                "service_name": "bench",
                "spool_dir": str(tmp / "sink"),
            }
        },
        "root": {"level": "DEBUG", "handlers": ["otlp"]},
    }
    (tmp / "hub.json").write_text(json.dumps(config))
    sock = tmp / "hub.sock"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    hub = subprocess.Popen(
        [sys.executable, "-m", "flocklog.cli", "serve", "--config", str(tmp / "hub.json"), "--unix", str(sock)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            query_status(f"unix:{sock}", timeout=1.0)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    handler = HubHandler(f"unix:{sock}", spool_dir=str(tmp / "client-spool"), when_full="block")
    _root_with(handler)
    logged = _fork_workers(run, workers, count)
    expected = sum(logged)
    _settle(receiver, run, expected, 120)
    handler.close()
    hub.send_signal(signal.SIGTERM)
    hub.wait(60)
    received, dups = _tally(receiver, run)
    return {"scenario": "hub", "expected": expected, "received": received, "lost": expected - received, "dup": dups}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--records", type=int, default=2000)
    args = parser.parse_args()
    receiver = Receiver("http")
    receiver.start()
    rows = [
        run_sdk(receiver, args.workers, args.records, sigterm=False),
        run_sdk(receiver, args.workers, args.records, sigterm=True),
        run_hub(receiver, args.workers, args.records),
    ]
    receiver.stop()
    result = {
        "benchmark": "otel_fork",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "workers": args.workers,
        "records_per_worker": args.records,
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "otel_fork.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"OTel logs from {args.workers} forked workers x {args.records} records (Python {result['python']})",
        f"{'scenario':<24}{'expected':>10}{'received':>10}{'lost':>8}{'dup':>6}",
    ]
    lines += [f"{r['scenario']:<24}{r['expected']:>10}{r['received']:>10}{r['lost']:>8}{r['dup']:>6}" for r in rows]
    table = "\n".join(lines) + "\n"
    (RESULTS / "otel_fork.txt").write_text(table)
    print(table, end="")


if __name__ == "__main__":
    main()
