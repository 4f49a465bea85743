"""uWSGI with 4 workers (the Django example), files and hub modes, with and without --lazy-apps and threads."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from contrib_helpers import (
    EXAMPLES,
    Server,
    free_port,
    hammer,
    hammer_across_boundaries,
    pid_of,
    wait_for_port,
    wait_until,
)

from flocklog.contrib.uwsgi import hub_config
from flocklog.verify import VerifyOptions, verify_paths

pytestmark = pytest.mark.slow

REQUESTS = 1200
UWSGI = str(Path(sys.executable).with_name("uwsgi"))


def _need_uwsgi() -> None:
    if not Path(UWSGI).exists():
        pytest.skip("uWSGI is not installed (pip install 'flocklog[uwsgi]')")


class Deployment:
    """The example project copied to a temporary directory, its hub (hub mode) and its uWSGI server."""

    def __init__(self, tmp_path: Path, env: dict[str, str], start_server: Callable[..., Server], mode: str) -> None:
        _need_uwsgi()
        self.tmp_path = tmp_path
        self.project = tmp_path / "uwsgi_django"
        shutil.copytree(EXAMPLES / "uwsgi_django", self.project)
        self.logs = self.project / "logs"
        self.logs.mkdir()
        self.start_server = start_server
        self.port = free_port()
        self.env = dict(env, FLOCKLOG_MODE=mode, LOG_WHEN="S", LOG_BACKUPS="1000")
        self.hub: Server | None = None
        if mode == "hub":
            config = tmp_path / "hub.json"
            config.write_text(json.dumps(hub_config(self.logs / "app.log", when="S", backup_count=1000)))
            sock = tmp_path / "hub.sock"
            args = [sys.executable, "-m", "flocklog", "serve", "--config", str(config), "--unix", str(sock)]
            self.hub = start_server(args, cwd=tmp_path, env=env, log=tmp_path / "hub.out")
            wait_until(lambda: sock.exists() or self.hub.proc.poll() is not None, 60, "the hub", self.hub.output)  # type: ignore[union-attr]
            self.env["FLOCKLOG_HUB_ADDRESS"] = f"unix:{sock}"

    def start(self, *, lazy: bool, threads: bool, processes: int = 4) -> Server:
        ini = (self.project / "uwsgi.ini").read_text()
        ini = ini.replace("127.0.0.1:8000", f"127.0.0.1:{self.port}")
        ini = ini.replace("enable-threads = true", f"enable-threads = {'true' if threads else 'false'}")
        ini = ini.replace("processes = 4", f"processes = {processes}")
        if lazy:
            ini += "lazy-apps = true\n"
        ini += f"virtualenv = {sys.prefix}\n"  # the compiled uwsgi embeds the base interpreter
        (self.project / "test.ini").write_text(ini)
        server = self.start_server(
            [UWSGI, "--ini", "test.ini"], cwd=self.project, env=self.env, log=self.tmp_path / "uwsgi.out"
        )
        wait_for_port(self.port, server)
        apps = processes if lazy else 1

        def booted() -> bool:
            out = server.log.read_text("utf-8", errors="replace")
            return out.count("spawned uWSGI worker") >= processes and out.count("WSGI app 0 (mountpoint='')") >= apps

        wait_until(booted, 120, f"uWSGI to boot {processes} workers", server.output)
        return server

    def stop(self, server: Server) -> None:
        assert server.terminate(120) == 0, server.output()
        if self.hub is not None:
            assert self.hub.terminate() == 0, self.hub.output()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def lines(self) -> list[str]:
        return [
            line
            for path in self.logs.glob("app.log*")
            if not path.name.endswith(".lock")
            for line in path.read_text("utf-8", errors="replace").splitlines()
        ]


@pytest.mark.parametrize(
    ("mode", "lazy", "threads"),
    [
        ("files", False, True),
        ("files", True, True),
        ("files", False, False),
        ("hub", False, True),
        ("hub", True, True),
        ("hub", False, False),
        ("hub", True, False),
    ],
    ids=lambda v: {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v,
)
def test_four_uwsgi_workers_log_every_request_once_across_rotations(
    mode: str,
    lazy: bool,
    threads: bool,
    tmp_path: Path,
    run_id: str,
    subprocess_env: dict[str, str],
    start_server: Callable[..., Server],
) -> None:
    deployment = Deployment(tmp_path, subprocess_env, start_server, mode)
    server = deployment.start(lazy=lazy, threads=threads)
    hammer_across_boundaries(deployment.url(), run_id, REQUESTS)
    deployment.stop(server)
    report = verify_paths(
        [str(deployment.logs / "app.log")],
        VerifyOptions(expect_per_writer=1, writers=REQUESTS, run=run_id, when="S", tolerance=0.5),
    )
    assert report.ok, (report.to_dict(), server.output())
    assert report.records == REQUESTS
    assert report.archives >= 2
    lines = deployment.lines()
    assert all(line.count("[PID:") == 1 for line in lines if "flk1" in line)
    assert len({pid_of(line) for line in lines if "flk1" in line}) >= 2, "several workers must have served"
    # The import-time record: once from the master (logged by the first worker to claim it), or once per worker.
    assert len([line for line in lines if "worker ready" in line]) == (4 if lazy else 1)
    if mode == "hub" and not threads:
        assert "runs without --enable-threads" in server.log.read_text()


@pytest.mark.parametrize("mode", ["files", "hub"])
def test_a_master_reload_loses_and_doubles_no_record(
    mode: str, tmp_path: Path, run_id: str, subprocess_env: dict[str, str], start_server: Callable[..., Server]
) -> None:
    """SIGHUP (``uwsgi --reload``): the workers finish, the master re-executes and imports the app again."""
    deployment = Deployment(tmp_path, subprocess_env, start_server, mode)
    server = deployment.start(lazy=False, threads=True)
    hammer(deployment.url(), run_id, 300)
    os.kill(server.proc.pid, signal.SIGHUP)

    def seen(text: str) -> int:
        return server.log.read_text("utf-8", errors="replace").count(text)

    wait_until(lambda: seen("WSGI app 0 (mountpoint='')") >= 2, 120, "the reload", server.output)
    wait_until(lambda: seen("spawned uWSGI worker") >= 8, 120, "the new workers", server.output)
    second = f"{run_id}b"
    hammer(deployment.url(), second, 300)
    deployment.stop(server)
    for run in (run_id, second):
        report = verify_paths(
            [str(deployment.logs / "app.log")],
            VerifyOptions(expect_per_writer=1, writers=300, run=run, when="S", tolerance=0.5),
        )
        assert report.ok, (report.to_dict(), server.output())
        assert report.records == 300
    assert len([line for line in deployment.lines() if "worker ready" in line]) == 2  # one per master generation


def test_a_postfork_function_registered_after_the_fork_runs_now_and_says_so(
    tmp_path: Path, subprocess_env: dict[str, str], start_server: Callable[..., Server]
) -> None:
    """The old recipe under --lazy-apps: a @postfork registered in a worker never ran, and nothing said so."""
    deployment = Deployment(tmp_path, subprocess_env, start_server, "files")
    wsgi = deployment.project / "uwsgi_django" / "wsgi.py"
    wsgi.write_text(
        wsgi.read_text()
        + "\nfrom flocklog.contrib.uwsgi import postfork\n\n\n@postfork\ndef late() -> None:\n"
        + "    logging.getLogger('uwsgi_django').info('late postfork ran')\n"
    )
    server = deployment.start(lazy=True, threads=True, processes=2)
    wait_until(
        lambda: len([line for line in deployment.lines() if "late postfork ran" in line]) >= 2,
        60,
        "the late post-fork functions",
        server.output,
    )
    deployment.stop(server)
    out = server.log.read_text()
    assert "was registered in worker" in out and "after the fork" in out
