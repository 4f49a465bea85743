"""Shared fixtures: the real services of this machine, and a small file system that can be filled up.

A test that needs a service it cannot reach skips with the reason outside CI; under ``CI=true`` it fails, so CI
can never go green by skipping.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from service_rules import need

PG_HOST = os.environ.get("FLOCKLOG_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("FLOCKLOG_TEST_PG_PORT", "5432"))
REDIS_HOST = os.environ.get("FLOCKLOG_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("FLOCKLOG_TEST_REDIS_PORT", "6379"))
SRC = Path(__file__).resolve().parents[1] / "src"

# Every process a test starts inherits this mark, however its environment was built from os.environ; a run that
# was killed before its fixtures could stop their servers is recognised by it (see _stop_orphans_of_dead_runs).
OWNER_VAR = "FLOCKLOG_TEST_OWNER"
os.environ[OWNER_VAR] = str(os.getpid())


def _owner_of(pid: int) -> int | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    for entry in environ.split(b"\0"):
        if entry.startswith(OWNER_VAR.encode() + b"="):
            with contextlib.suppress(ValueError):
                return int(entry.split(b"=", 1)[1])
    return None


@pytest.fixture(scope="session", autouse=True)
def _stop_orphans_of_dead_runs() -> None:
    """Kill servers left behind by a test run that was itself killed (SIGKILL, a CI time-out).

    A Celery worker orphaned that way still consumes its Redis database's ``logs`` queue, and the next run of the
    same test (same database index) would lose batches to it. Runs still alive, such as a second suite started
    beside this one, keep their processes.
    """
    if not Path("/proc").is_dir():  # macOS: no /proc to look in, and no orphans found this way
        return
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        owner = _owner_of(int(entry.name))
        if owner is None or owner == os.getpid() or Path(f"/proc/{owner}").exists():
            continue
        with contextlib.suppress(OSError):
            os.kill(int(entry.name), signal.SIGKILL)


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """DSN of the machine's real PostgreSQL (trust auth, database ``test``)."""
    need(
        port_open(PG_HOST, PG_PORT),
        f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}; start it with "
        "'pg_ctlcluster --skip-systemctl-redirect 15 main start'",
    )
    return f"postgresql://postgres@{PG_HOST}:{PG_PORT}/test"


@pytest.fixture(scope="session")
def redis_server() -> str:
    """``host:port`` of the machine's real Redis."""
    need(
        port_open(REDIS_HOST, REDIS_PORT),
        f"Redis is not reachable on {REDIS_HOST}:{REDIS_PORT}; start it with 'redis-server --daemonize yes'",
    )
    return f"{REDIS_HOST}:{REDIS_PORT}"


@pytest.fixture
def redis_url(redis_server: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A Redis URL on a database index of this test's own (1-15), flushed before and after.

    Tests that run Celery workers would otherwise see each other's queues.
    """
    db = zlib.crc32(request.node.nodeid.encode()) % 15 + 1
    url = f"redis://{redis_server}/{db}"
    _flush_redis(redis_server, db)
    yield url
    _flush_redis(redis_server, db)


def _flush_redis(server: str, db: int) -> None:
    host, port = server.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"SELECT {db}\r\nFLUSHDB\r\n".encode())
        sock.recv(64)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted under ``tmp_path``: a real file system that really runs out of space."""
    mount_point = tmp_path / "small_fs"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    need(result.returncode == 0, f"cannot mount a tmpfs (needs root): {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture
def run_id() -> str:
    """A fresh run id for stamped records, so leftovers of another test can never satisfy this one."""
    return uuid.uuid4().hex[:12]


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for separately started interpreters: they import flocklog from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH", "")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


PYTHON = sys.executable
