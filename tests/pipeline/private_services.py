"""A PostgreSQL server of the test's own (a throwaway cluster on its own port) that a test may stop and start.

The machine's shared PostgreSQL must never be stopped, so a fault test that takes the database away runs its own:
``initdb`` as the ``postgres`` OS user (PostgreSQL refuses to run as root) in a temporary directory that user owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from pipeline_helpers import free_port


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def private_postgres_problem() -> str | None:
    """Why a private PostgreSQL cannot run here, or None."""
    if _bin("initdb") is None or _bin("pg_ctl") is None:
        return "no initdb/pg_ctl (install the postgresql server package)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no 'postgres' OS user to run a private PostgreSQL as"
    if os.geteuid() != 0 and pwd.getpwuid(os.geteuid()).pw_name != "postgres":
        return "a private PostgreSQL needs root (to run initdb as the postgres user) or to be the postgres user"
    return None


class PrivatePostgres:
    """``initdb`` + ``pg_ctl start/stop`` on a free port, trust auth on loopback, sockets in its own directory."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="flocklog-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        user = pwd.getpwnam("postgres")
        self._uid, self._gid = user.pw_uid, user.pw_gid
        os.chmod(self.root, 0o755)
        os.chown(self.root, self._uid, self._gid)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str, timeout: float = 120) -> None:
        prefix = [] if os.geteuid() == self._uid else ["runuser", "-u", "postgres", "--"]
        result = subprocess.run(
            [*prefix, *command], capture_output=True, text=True, timeout=timeout, cwd=self.root, check=False
        )
        if result.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{command[0]} failed: {result.stdout}{result.stderr}\n{tail}")

    def init(self) -> None:
        self._run(str(_bin("initdb")), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c shared_buffers=16MB -c max_connections=40"
        )
        self._run(
            str(_bin("pg_ctl")), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "90", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(str(_bin("pg_ctl")), "-D", str(self.data), "-m", mode, "-w", "-t", "90", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
