"""Many processes, one log: stdlib QueueListener, the stdlib pickle-socket recipe and flocklog's hub side by side.

Each run starts P writer processes (1, 4 and 8) that each log N records through the transport under test; one
file handler in the parent writes everything (``logging.FileHandler`` for the stdlib paths; flocklog's
RotatingFileHandler, which takes the hub's chunks with one write each, for the hub). Reported: aggregate records/s
from the start signal until the parent has written all P*N records, the parent's CPU per record (the writer side:
listener or hub), and the client-side cost of ``logger.info`` (p50/p99, µs), measured around every call. Runs are
repeated ``--reps`` times, interleaved (queue, hub, queue, hub...), and reported as medians with their spread.
``--flood`` also floods a ``flocklog serve`` process with 1 MiB frames of tiny records and reports its peak RSS
against its ``--max-memory`` bound. Usage: ``.venv/bin/python benchmarks/hub.py [--quick] [--flood]``; JSON goes to
benchmarks/results/hub.json.
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
import resource
import socket
import socketserver
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import flocklog
from flocklog.hub import HubHandler, frames, query_status, start_hub

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


class CountingBatchHandler(flocklog.RotatingFileHandler):
    """The hub's single writer: flocklog's file handler (batch path), counting what it wrote."""

    def __init__(self, path: str, expected: int) -> None:
        super().__init__(path, mode="w")
        self.expected = expected
        self.count = 0
        self.done = threading.Event()

    def emit_batch(self, records: Any) -> None:
        super().emit_batch(records)
        self.count += len(records)
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
    sink_class = CountingBatchHandler if kind == "flocklog_hub" else CountingFileHandler
    sink: Any = sink_class(str(workdir / f"{kind}-{procs}.log"), procs * n)
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
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
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
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
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
        "writer_cpu_us_per_record": round(cpu * 1e6 / max(1, sink.count), 2),
        "emit_p50_us": round(pct(0.50), 2),
        "emit_p99_us": round(pct(0.99), 2),
        "emit_p999_us": round(pct(0.999), 2),
    }


def _median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(rows[0])
    for key in ("records_per_s", "seconds", "writer_cpu_us_per_record", "emit_p50_us", "emit_p99_us", "emit_p999_us"):
        values = [r[key] for r in rows]
        out[key] = statistics.median(values)
        out[key + "_spread"] = [min(values), max(values)]
    out["complete"] = all(r["complete"] for r in rows)
    out["reps"] = len(rows)
    return out


def _tiny_recs() -> bytes:
    """A batch's ``recs`` array, packed: ~1 MiB of tiny records (the costly part of a frame, built once)."""
    record, _ = frames.encode_record(frames.record_to_fields(logging.makeLogRecord({"msg": "t"}), "t"), 4096)
    return frames.pack([record] * ((frames.DEFAULT_MAX_FRAME - 4096) // (len(record) + 2)))


def _tiny_frame(cid: str, seq: int, recs: bytes) -> bytes:
    """A batch frame around packed ``recs``: the map's other entries, then the array (the same msgpack as pack())."""
    head = b"".join(frames.pack(v) for v in ("t", "b", "cid", cid, "seq", seq, "st", [0, 0], "recs"))
    body = b"\x85" + head + recs  # a map of 5 entries
    return frames.HEADER.pack(len(body)) + body


def flood(workdir: Path, bound: int, connections: int = 4, per_connection: int = 48) -> dict[str, Any]:
    """Peak RSS of a ``flocklog serve`` flooded with 1 MiB frames of tiny records, against its byte bound.

    192 frames (~190 MiB, 2.8M records) through a 64 MiB bound, so the hub has to pause reading: a flood that fits
    in the bound says nothing about it.
    """
    config = workdir / "flood.json"
    handler = {"class": "flocklog.RotatingFileHandler", "filename": str(workdir / "flood.log")}
    config.write_text(json.dumps({"version": 1, "handlers": {"f": handler}, "root": {"handlers": ["f"]}}))
    sock_path = workdir / "flood.sock"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    command = [sys.executable, "-m", "flocklog.cli", "serve", "--config", str(config), "--unix", str(sock_path)]
    proc = subprocess.Popen([*command, "--max-memory", str(bound)], env=env, stderr=subprocess.DEVNULL)
    address = f"unix:{sock_path}"
    for _ in range(600):
        try:
            query_status(address, timeout=1.0)
            break
        except Exception:
            time.sleep(0.05)

    def vm(field: str) -> int:
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        return 0

    baseline = vm("VmRSS")

    recs = _tiny_recs()  # frames are cheap to build from it: the senders flood faster than the hub can write
    refused: list[Any] = []

    def one(n: int) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(sock_path))
        frames.read_payload(s, frames.DEFAULT_MAX_FRAME)
        for seq in range(per_connection):
            s.sendall(_tiny_frame(f"flood{n}", seq, recs))
        for _ in range(per_connection):
            reply = frames.unpack(frames.read_payload(s, frames.DEFAULT_MAX_FRAME))
            if reply.get("t") != "ack":
                refused.append(reply)
        s.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=one, args=(n,)) for n in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    status = query_status(address)
    peak = vm("VmHWM")
    proc.terminate()
    proc.wait(60)
    return {
        "max_memory": bound,
        "frames": connections * per_connection,
        "records": status["records_written"],
        "seconds": round(elapsed, 2),
        "baseline_rss": baseline,
        "peak_rss": peak,
        "peak_above_baseline": peak - baseline,
        "under_bound": peak - baseline < bound,
        "read_pauses": status["read_pauses"],
        "not_acked": len(refused),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer records per process")
    parser.add_argument("--records", type=int, default=None)
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions (medians are reported)")
    parser.add_argument("--socket", action="store_true", help="also run the stdlib pickle-socket recipe")
    parser.add_argument("--flood", action="store_true", help="also measure peak RSS under a flood of huge frames")
    parser.add_argument("--flood-reps", type=int, default=3, help="flood runs (each a fresh hub process)")
    args = parser.parse_args()
    n = args.records or (5000 if args.quick else 20000)
    kinds = ["stdlib_queue", "flocklog_hub"] + (["stdlib_socket"] if args.socket else [])
    raw: list[dict[str, Any]] = []
    flood_result: list[dict[str, Any]] | None = None
    with tempfile.TemporaryDirectory(prefix="flocklog-bench-hub-") as tmp:
        # P=1 shows the uncontended cost of emit(); with 4 and 8 busy writers on fewer cores, p99 mostly measures
        # how often a writer is preempted in the middle of a call.
        for rep in range(args.reps):
            for procs in (1, 4, 8):
                for kind in kinds if rep % 2 == 0 else kinds[::-1]:
                    row = run_one(kind, procs, n, Path(tmp))
                    raw.append(row)
                    print(
                        f"rep {rep} {kind:14} P={procs}  {row['records_per_s']:>9,} rec/s  "
                        f"cpu {row['writer_cpu_us_per_record']:>5.2f}us/rec  "
                        f"emit p50 {row['emit_p50_us']:>6.2f}us  p99 {row['emit_p99_us']:>7.2f}us  "
                        f"{'ok' if row['complete'] else 'INCOMPLETE'}",
                        flush=True,
                    )
        if args.flood:
            flood_result = []
            for i in range(args.flood_reps):
                workdir = Path(tmp) / f"flood{i}"  # a fresh hub: its de-duplication journal would skip a rerun
                workdir.mkdir()
                flood_result.append(flood(workdir, 64 * 1024 * 1024))
                print(json.dumps({"flood": flood_result[-1]}), flush=True)
    rows = [
        _median_row([r for r in raw if r["transport"] == kind and r["processes"] == procs])
        for procs in (1, 4, 8)
        for kind in kinds
    ]
    summary = {}
    for procs in (1, 4, 8):
        by = {r["transport"]: r for r in rows if r["processes"] == procs}
        hub, queue = by["flocklog_hub"], by["stdlib_queue"]
        summary[f"P{procs}"] = {
            "hub_vs_queue_throughput": round(hub["records_per_s"] / queue["records_per_s"], 2),
            "hub_vs_queue_throughput_spread": [
                round(hub["records_per_s_spread"][0] / queue["records_per_s_spread"][1], 2),
                round(hub["records_per_s_spread"][1] / queue["records_per_s_spread"][0], 2),
            ],
            "hub_writer_cpu_us_per_record": hub["writer_cpu_us_per_record"],
            "queue_writer_cpu_us_per_record": queue["writer_cpu_us_per_record"],
            "hub_emit_p50_us": hub["emit_p50_us"],
            "hub_emit_p99_us": hub["emit_p99_us"],
            "target_3x_met": hub["records_per_s"] >= 3 * queue["records_per_s"],
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
                "reps": args.reps,
                "rows": rows,
                "raw": raw,
                "summary": summary,
                "flood": flood_result,
                "flood_summary": None
                if not flood_result
                else {
                    "runs": len(flood_result),
                    "max_memory": flood_result[0]["max_memory"],
                    "peak_above_baseline": [r["peak_above_baseline"] for r in flood_result],
                    "peak_above_baseline_max": max(r["peak_above_baseline"] for r in flood_result),
                    "all_under_bound": all(r["under_bound"] for r in flood_result),
                },
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
