"""The uvicorn wrapper's hub process: started before the workers, drained at the end, never left behind, restarted.

``python -m flocklog.contrib.uvicorn`` runs its hub as a child process (``flocklog serve``) so it does not share the
supervisor's GIL. These tests hold it to what a supervised child owes: every record sent before SIGTERM/SIGINT is
in the file (``flocklog verify``), the child is gone once the wrapper is, even when the wrapper is SIGKILLed, and a
child that dies while serving is warned about and replaced without losing a record.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from contrib_helpers import EXAMPLES, Server, free_port, hammer, wait_for_port, wait_for_workers, wait_until

pytestmark = pytest.mark.slow

WAIT = 120.0
REQUESTS = 400
_HUB_LINE = re.compile(r"flocklog hub pid (\d+) listening on unix:(\S+)")


def _start_wrapper(
    tmp_path: Path, subprocess_env: dict[str, str], start_server: Callable[..., Server]
) -> tuple[Server, Path, int]:
    app_dir = tmp_path / "uvicorn_app"
    shutil.copytree(EXAMPLES / "uvicorn_app", app_dir)
    (app_dir / "logs").mkdir()
    port = free_port()
    # A spool directory of the test's own: the hub adopts the spools of exited writers it finds there.
    env = dict(subprocess_env, FLOCKLOG_HUB_SPOOL_DIR=str(tmp_path / "spool"))
    args = [sys.executable, "-m", "flocklog.contrib.uvicorn", "--log-file", "logs/app.log", "--when", "none"]
    args += ["--max-bytes", str(1 << 30), "--", "app:app", "--workers", "2", "--port", str(port)]
    server = start_server(args, cwd=app_dir, env=env, log=tmp_path / "uvicorn.out")
    wait_for_port(port, server, WAIT)
    wait_for_workers(app_dir / "logs", "Application startup complete", 2, server, WAIT)
    return server, app_dir / "logs" / "app.log", port


def _hub_pids(server: Server) -> list[int]:
    """Every hub process the wrapper started, in order (each says its pid on stderr when it listens)."""
    return [int(pid) for pid, _ in _HUB_LINE.findall(server.log.read_text("utf-8", errors="replace"))]


def _hub_directory(server: Server) -> Path:
    """The private directory of the hub's socket and de-duplication journal."""
    [(_, path)] = _HUB_LINE.findall(server.log.read_text("utf-8", errors="replace"))[:1]
    return Path(path).parent


def _gone(pid: int) -> bool:
    """No such process, or a zombie nobody reaped yet (an orphan's reaper in a container may be slow or absent)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def _verify(log_file: Path, run: str, writers: int) -> None:
    """``flocklog verify``: each of the ``writers`` requests of ``run`` logged its record exactly once, untorn."""
    command = [sys.executable, "-m", "flocklog", "verify", str(log_file), "--run", run, "--expect", "1"]
    done = subprocess.run([*command, "--writers", str(writers)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_wrappers_hub_is_a_child_process_that_listens_before_the_workers_start(
    tmp_path: Path, subprocess_env: dict[str, str], start_server: Callable[..., Server]
) -> None:
    server, log_file, _ = _start_wrapper(tmp_path, subprocess_env, start_server)
    pids = _hub_pids(server)
    assert len(pids) == 1, server.output()
    assert pids[0] != server.proc.pid, "the hub must not run inside the uvicorn supervisor"
    # The workers logged their start-up through the hub: it was listening before they served.
    assert "Application startup complete" in log_file.read_text("utf-8")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_every_record_sent_before_the_wrapper_is_stopped_is_written_and_the_hub_child_is_gone(
    signum: int, tmp_path: Path, run_id: str, subprocess_env: dict[str, str], start_server: Callable[..., Server]
) -> None:
    server, log_file, port = _start_wrapper(tmp_path, subprocess_env, start_server)
    [hub] = _hub_pids(server)
    hammer(f"http://127.0.0.1:{port}/", run_id, REQUESTS)
    server.proc.send_signal(signum)
    assert server.proc.wait(WAIT) == 0, server.output()
    assert _gone(hub), f"the hub child {hub} outlived the wrapper\n{server.output()}"
    assert "flocklog hub stopped:" in server.output(), "the hub must stop through its drain, not be killed"
    assert not _hub_directory(server).exists(), "the wrapper removes the hub's private directory"
    _verify(log_file, run_id, REQUESTS)


def test_the_hub_child_does_not_outlive_a_sigkilled_wrapper(
    tmp_path: Path, subprocess_env: dict[str, str], start_server: Callable[..., Server]
) -> None:
    server, _, _ = _start_wrapper(tmp_path, subprocess_env, start_server)
    [hub] = _hub_pids(server)
    directory = _hub_directory(server)
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(WAIT)
    wait_until(lambda: _gone(hub), WAIT, f"the hub child {hub} to exit after its wrapper was SIGKILLed", server.output)
    # Nobody is left to remove the socket's private directory but the hub itself, on its way out.
    wait_until(lambda: not directory.exists(), WAIT, f"{directory} to be removed", server.output)


def test_a_hub_child_that_dies_while_serving_is_warned_about_and_restarted_and_nothing_is_lost(
    tmp_path: Path, run_id: str, subprocess_env: dict[str, str], start_server: Callable[..., Server]
) -> None:
    server, log_file, port = _start_wrapper(tmp_path, subprocess_env, start_server)
    [first] = _hub_pids(server)
    url = f"http://127.0.0.1:{port}/"
    hammer(url, run_id, REQUESTS // 2)  # writers r0 ... r199
    os.kill(first, signal.SIGKILL)

    # Requests while no hub (or a fresh one) listens: the workers spool these and replay them into the new hub.
    def request(index: int) -> None:
        httpx.get(url, params={"run": run_id, "writer": f"r{index}"}, timeout=30).raise_for_status()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(request, range(REQUESTS // 2, REQUESTS)))
    wait_until(lambda: len(_hub_pids(server)) >= 2, WAIT, "a second hub process", server.output)
    second = _hub_pids(server)[1]
    assert second != first
    warning = f"the log hub (pid {first}) exited with -9 while serving: restarting it"
    assert warning in server.output()
    assert server.terminate(WAIT) == 0, server.output()
    assert _gone(second)
    # The warning went to the flocklog logger too, and so through the new hub into the file.
    assert warning in log_file.read_text("utf-8")
    _verify(log_file, run_id, REQUESTS)


def test_stopping_while_a_restarted_hub_has_not_listened_yet_is_warned_about(tmp_path: Path) -> None:
    """A restarted child that is alive but not (yet) listening is not serving: the workers' last records are in
    their spools, and stop() must say so. The restart here blocks for good before it listens: its log file has
    become a FIFO nobody reads, so opening it for writing never returns."""
    import json
    import logging

    from flocklog.contrib._hubchild import HubChild
    from flocklog.contrib._setup import log_settings

    seen: list[str] = []
    catcher = logging.Handler()
    catcher.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("flocklog").addHandler(catcher)
    hub = HubChild(log_settings(tmp_path / "app.log", when="none", max_bytes=1 << 20), drain_timeout=1.0)
    try:
        hub.start()
        first = hub.pid
        assert first is not None
        config_path = Path(hub.address[len("unix:") :]).parent / "hub.json"
        config = json.loads(config_path.read_text("utf-8"))
        os.mkfifo(tmp_path / "fifo.log")
        config["handlers"]["file"]["filename"] = str(tmp_path / "fifo.log")
        config_path.write_text(json.dumps(config), "utf-8")
        os.kill(first, signal.SIGKILL)
        wait_until(
            lambda: hub.pid not in (None, first), WAIT, "the supervisor to start another hub", lambda: "\n".join(seen)
        )
        assert hub.pid is not None and not _gone(hub.pid)
    finally:
        hub.stop()
        logging.getLogger("flocklog").removeHandler(catcher)
    assert any("exited with -9 while serving" in message for message in seen), seen
    assert any("was not serving when the wrapper stopped" in message for message in seen), seen
