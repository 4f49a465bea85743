"""Helpers for the integration tests: real servers as subprocesses, stamped-log counting, free ports."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from flocklog.stamps import parse_stamp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_lines(directory: Path) -> Iterator[str]:
    """Every line of every log file in ``directory`` (archives included, lock and state files not)."""
    for path in directory.iterdir():
        if path.suffix in (".lock", ".state") or not path.is_file():
            continue
        try:
            text = path.read_text("utf-8", errors="replace")
        except OSError:
            continue
        yield from text.splitlines()


def pid_of(line: str) -> str:
    """The writer's pid in a line formatted with flocklog's PID_TID_FORMAT ("... [PID:123, TID:456] ...")."""
    return line.split("[PID:")[1].split(",")[0]


def stamped_count(directory: Path, run: str) -> int:
    """Stamped records of ``run`` in every file of ``directory`` (archives included); torn lines do not count."""
    total = 0
    for line in log_lines(directory):
        stamp = parse_stamp(line)
        if stamp is not None and stamp.run == run:
            total += 1
    return total


def wait_for_clock_boundary(seconds: float = 1.0) -> None:
    """Return once the wall clock has entered its next ``seconds`` slot: a condition, so a run split around it
    crosses a rotation boundary however fast or slow the machine is."""
    boundary = (time.time() // seconds + 1) * seconds
    wait_until(lambda: time.time() >= boundary + 0.05, seconds + 120, "the next clock boundary")


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, on_fail: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{on_fail()}")


class Server:
    """A server process in its own process group, its output in a file, stopped (and reaped) in a finalizer."""

    def __init__(self, args: list[str], *, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def output(self) -> str:
        return self.log.read_text("utf-8", errors="replace")[-6000:]

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM (a warm shutdown for every server here) and wait for a clean exit."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"server did not stop within {timeout}s\n{self.output()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        else:
            # the leader is gone, children of the group may not be
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self._out.close()


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def wait_for_port(port: int, server: Server, timeout: float = 60.0) -> None:
    def listening() -> bool:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited with {server.proc.returncode}\n{server.output()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    wait_until(listening, timeout, f"port {port}", server.output)


def wait_for_workers(log_dir: Path, marker: str, workers: int, server: Server, timeout: float = 90.0) -> None:
    """Wait until ``workers`` distinct processes have logged ``marker`` (a "[PID:n," line) into ``log_dir``.

    The listening port answers as soon as the first worker is up; a run that starts then can be served by that one
    worker alone, which proves nothing about several processes sharing the file set.
    """

    def started() -> set[str]:
        return {pid_of(line) for line in log_lines(log_dir) if marker in line and "[PID:" in line}

    def ready() -> bool:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited with {server.proc.returncode}\n{server.output()}")
        return len(started()) >= workers

    wait_until(ready, timeout, f"{workers} workers to log {marker!r}", lambda: f"{started()}\n{server.output()}")


def hammer(url: str, run: str, requests: int, threads: int = 4, *, first: int = 0) -> None:
    """``requests`` GETs from ``threads`` httpx clients, each request a writer of its own (one record, seq 0).

    Writers are named ``r<first>`` onwards, so one run can be sent in parts.

    Every request opens its own connection, so the kernel hands them to whichever worker accepts next; kept-alive
    connections would pin a whole thread's share to the worker that accepted it first.
    """
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    def worker(offset: int) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(timeout=30, limits=limits) as client:
            for index in range(first + offset, first + requests, threads):
                response = client.get(url, params={"run": run, "writer": f"r{index}"})
                response.raise_for_status()

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(worker, offset) for offset in range(threads)]:
            future.result()


def hammer_across_boundaries(url: str, run: str, requests: int) -> None:
    """:func:`hammer` the run in two halves split by a clock-second boundary, then one more boundary and a few
    records of another run: the run spans two one-second slots and its last slot is archived, however fast or
    slow the machine serves it (``when="S"`` sets then always have at least two archives)."""
    half = requests // 2
    hammer(url, run, half)
    wait_for_clock_boundary()
    hammer(url, run, requests - half, first=half)
    wait_for_clock_boundary()
    hammer(url, "warmup", 8)
