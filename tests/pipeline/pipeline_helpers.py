"""Real processes for the pipeline tests: Celery workers, producers, a private Redis and a cuttable TCP proxy."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flocklog.pipeline.transports import worker_command

SRC = Path(__file__).resolve().parents[2] / "src"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def pipeline_env(base: dict[str, str], **values: str) -> dict[str, str]:
    env = dict(base)
    env["PYTHONPATH"] = str(SRC)
    env.update(values)
    return env


class Worker:
    """``celery -A flocklog.pipeline.celery_app worker -Q logs`` in its own process group (so kill -9 takes all)."""

    def __init__(self, env: dict[str, str], log: Path, concurrency: int = 2, extra: tuple[str, ...] = ()) -> None:
        self.env, self.log, self.concurrency, self.extra = env, log, concurrency, extra
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            worker_command(
                "--concurrency",
                str(self.concurrency),
                "-l",
                "info",
                "--without-gossip",
                "--without-mingle",
                *self.extra,
            ),
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),  # noqa: SIM115  # the child owns it
            start_new_session=True,
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def service_env(tmp_path: Path, broker: str, database: str, table: str, **extra: str) -> dict[str, str]:
    """The environment of a producer or worker on real services, its spool and dead letters under ``tmp_path``."""
    return pipeline_env(
        dict(os.environ),
        FLOCKLOG_BROKER_URL=broker,
        FLOCKLOG_DATABASE_URL=database,
        FLOCKLOG_TABLE=table,
        FLOCKLOG_SPOOL_DIR=str(tmp_path / "spool"),
        FLOCKLOG_DEAD_LETTER_DIR=str(tmp_path / "dead"),
        **extra,
    )


def _produce(
    env: dict[str, str], count: int, batch_size: int, pause_every: int, pause: float, drain: float = 60.0
) -> None:
    os.environ.update(env)
    from flocklog.pipeline.logger import ExecutionLogger

    logger = ExecutionLogger(
        "producer",
        transport="celery",
        batch_size=batch_size,
        flush_interval=0.5,
        retry_interval=0.3,
        capacity=count + 1,
        drain_timeout=drain,
    )
    for i in range(count):
        logger.info("work done", n=i, producer=os.getpid())
        if pause_every and i % pause_every == pause_every - 1:
            time.sleep(pause)
    logger.close(timeout=drain)


def start_producers(
    env: dict[str, str],
    producers: int,
    count: int,
    *,
    batch_size: int = 50,
    pause_every: int = 0,
    pause: float = 0.0,
    drain: float = 60.0,
) -> list[multiprocessing.process.BaseProcess]:
    """Producer processes that each log ``count`` records and exit normally, waiting up to ``drain`` seconds in
    ``close()`` for the worker's receipts (what is still unconfirmed then goes to the spool)."""
    ctx = multiprocessing.get_context("spawn")  # a clean interpreter, as a separate app process would be
    args = (env, count, batch_size, pause_every, pause, drain)
    procs = [ctx.Process(target=_produce, args=args) for _ in range(producers)]
    for proc in procs:
        proc.start()
    return procs


class PrivateRedis:
    """A redis-server of the test's own, with an fsync-always AOF, so it can be stopped and restarted; with
    ``persistent=False`` a restart comes back empty (queue, unacked batches and receipts all gone)."""

    def __init__(self, directory: Path, *, persistent: bool = True) -> None:
        self.port = free_port()
        self.directory = directory
        self.persistent = persistent
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes" if self.persistent else "no",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert wait_until(self._up, 10), "private redis-server did not start"

    def _up(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


class CuttableProxy:
    """A TCP proxy to a real server that the test can cut (refuse and drop every connection) and restore."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._open = threading.Event()
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> None:
        self._open.set()
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self._open.is_set():
                time.sleep(0.05)
                continue
            if self._listener is None:
                listener = socket.socket()
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(("127.0.0.1", self.port))
                listener.listen(64)
                listener.settimeout(0.1)
                self._listener = listener
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, dest: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                dest.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, dest):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self._open.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._conns:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
            self._conns.clear()

    def restore(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._stop.set()
        self.cut()


def children_of(pid: int) -> list[int]:
    """The live child processes of ``pid`` (a Celery worker's prefork children)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def broker_counts(url: str) -> dict[str, int]:
    """What waits on the broker: batches in the ``logs`` queue and batches held unacked by some worker."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        return {"queued": int(client.llen("logs")), "unacked": int(client.hlen("unacked"))}
    except redis.RedisError:
        return {}
    finally:
        client.close()


def drop_table(dsn: str, table: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


def count_rows(dsn: str, table: str) -> Any:
    import psycopg

    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(f"SELECT count(*), count(DISTINCT id) FROM {table}").fetchone()
            return (int(row[0]), int(row[1])) if row else (0, 0)
    except psycopg.errors.UndefinedTable:
        return (0, 0)
