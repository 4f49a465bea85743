"""Many processes, one log: stdlib QueueListener, the stdlib pickle-socket recipe and flocklog's hub side by side.

Each run starts P writer processes (1, 4 and 8) that each log N records through the transport under test; one
``logging.FileHandler`` in the parent writes everything. Reported: aggregate records/s from the start signal until
the parent has written all P*N records, and the client-side cost of ``logger.info`` (p50/p99, ns), measured around
every call. Usage: ``.venv/bin/python benchmarks/hub.py [--quick]``; JSON goes to benchmarks/results/hub.json.
"""

from __future__ import annotations

import argparse
import array
import json
import logging
import logging.handlers
import multiprocessing
import os
import pickle  # the stdlib recipe's server unpickles: loopback only, benchmark only
import platform
import socketserver
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from flocklog.hub import HubHandler, start_hub

FORMAT = "%(asctime)s %(levelname)s [PID:%(process)d] %(message)s"
PAYLOAD = "x" * 64
RESULTS = Path(__file__).resolve().parent / "results" / "hub.json"


class CountingFileHandler(logging.FileHandler):
    """The single writer in the parent; signals when it has written the expected number of records."""

    def __init__(self, path: str, expected: int) -> None:
        super().__init__(path, mode="w")
        self.expected = expected
        self.count = 0
        self.done = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        self.count += 1
        if self.count >= self.expected:
            self.done.set()


class _UnpicklingHandler(socketserver.StreamRequestHandler):
    """The logging cookbook's receiver: length-prefixed pickles, unpickled (exactly what flocklog refuses to do)."""

    def handle(self) -> None:
        target: logging.Handler = self.server.target  # type: ignore[attr-defined]
        while True:
            chunk = self.connection.recv(4)
            if len(chunk) < 4:
                return
            (length,) = struct.unpack(">L", chunk)
            data = b""
            while len(data) < length:
                more = self.connection.recv(length - len(data))
                if not more:
                    return
                data += more
            record = logging.makeLogRecord(pickle.loads(data))
            target.handle(record)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _writer(kind: str, target: Any, n: int, start: Any, out_path: str) -> None:
    if kind == "stdlib_queue":
        handler: logging.Handler = logging.handlers.QueueHandler(target)
    elif kind == "stdlib_socket":
        handler = logging.handlers.SocketHandler("127.0.0.1", target)
    else:
        handler = HubHandler(target, when_full="block", spool_dir=tempfile.gettempdir() + "/flocklog-bench-spool")
    handler.setFormatter(logging.Formatter(FORMAT))
    logger = logging.getLogger(f"bench.{os.getpid()}")
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    lat = array.array("q", bytes(8 * n))
    start.wait()
    clock = time.perf_counter_ns
    info = logger.info
    for i in range(n):
        t0 = clock()
        info("record %d %s", i, PAYLOAD)
        lat[i] = clock() - t0
    handler.close()
    with open(out_path, "wb") as f:
        lat.tofile(f)


def run_one(kind: str, procs: int, n: int, workdir: Path) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")
    sink = CountingFileHandler(str(workdir / f"{kind}-{procs}.log"), procs * n)
    sink.setFormatter(logging.Formatter("%(message)s"))
    cleanup: list[Any] = []
    target: Any
    if kind == "stdlib_queue":
        queue: Any = ctx.Queue(-1)
        listener = logging.handlers.QueueListener(queue, sink)
        listener.start()
        cleanup.append(listener.stop)
        target = queue
    elif kind == "stdlib_socket":
        server = _Server(("127.0.0.1", 0), _UnpicklingHandler)
        server.target = sink  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        cleanup += [server.shutdown, server.server_close]
        target = server.server_address[1]
    else:
        hub = start_hub([sink])
        cleanup.append(hub.stop)
        target = hub.address
    start = ctx.Event()
    outs = [str(workdir / f"{kind}-{procs}-{i}.lat") for i in range(procs)]
    workers = [ctx.Process(target=_writer, args=(kind, target, n, start, outs[i])) for i in range(procs)]
    for w in workers:
        w.start()
    time.sleep(0.5)  # let every writer build its handler (connect) before the clock starts
    t0 = time.perf_counter()
    start.set()
    # a transport that silently drops (the stdlib SocketHandler does, on any socket error) never completes:
    # stop waiting once every writer has exited and nothing arrived for 3 seconds
    last, idle_since = -1, time.monotonic()
    while not sink.done.wait(0.2):
        if sink.count != last:
            last, idle_since = sink.count, time.monotonic()
        elif all(not w.is_alive() for w in workers) and time.monotonic() - idle_since > 3.0:
            break
    finished = sink.done.is_set()
    elapsed = time.perf_counter() - t0
    for w in workers:
        w.join(60)
    for step in cleanup:
        step()
    sink.close()
    lat = array.array("q")
    for path in outs:
        with open(path, "rb") as f:
            lat.frombytes(f.read())
    ordered = sorted(lat)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] / 1000.0 if ordered else float("nan")

    return {
        "transport": kind,
        "processes": procs,
        "records_per_process": n,
        "written": sink.count,
        "complete": finished and sink.count == procs * n,
        "seconds": round(elapsed, 3),
        "records_per_s": round(sink.count / elapsed),
        "emit_p50_us": round(pct(0.50), 2),
        "emit_p99_us": round(pct(0.99), 2),
        "emit_p999_us": round(pct(0.999), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer records per process")
    parser.add_argument("--records", type=int, default=None)
    args = parser.parse_args()
    n = args.records or (5000 if args.quick else 20000)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="flocklog-bench-hub-") as tmp:
        # P=1 shows the uncontended cost of emit(); with 4 and 8 busy writers on fewer cores, p99 mostly measures
        # how often a writer is preempted in the middle of a call.
        for procs in (1, 4, 8):
            for kind in ("stdlib_queue", "stdlib_socket", "flocklog_hub"):
                row = run_one(kind, procs, n, Path(tmp))
                rows.append(row)
                print(
                    f"{kind:14} P={procs}  {row['records_per_s']:>9,} rec/s  {row['seconds']:>7.2f}s  "
                    f"emit p50 {row['emit_p50_us']:>6.2f}us  p99 {row['emit_p99_us']:>7.2f}us  "
                    f"{'ok' if row['complete'] else 'INCOMPLETE'}",
                    flush=True,
                )
    summary = {}
    for procs in (1, 4, 8):
        by = {r["transport"]: r for r in rows if r["processes"] == procs}
        summary[f"P{procs}"] = {
            "hub_vs_queue_throughput": round(
                by["flocklog_hub"]["records_per_s"] / by["stdlib_queue"]["records_per_s"], 2
            ),
            "hub_emit_p99_us": by["flocklog_hub"]["emit_p99_us"],
            "targets_met": by["flocklog_hub"]["records_per_s"] >= 2 * by["stdlib_queue"]["records_per_s"]
            and by["flocklog_hub"]["emit_p99_us"] <= 20.0,
        }
    print(json.dumps(summary, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "hub",
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "records_per_process": n,
                "rows": rows,
                "summary": summary,
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
