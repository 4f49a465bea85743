"""The lifecycle module: every way a process ends or forks drains flocklog's buffers, and SIGTERM is never swallowed.

Each case runs in a real child process and counts what reached a real SQLite store (ExecutionLogger, direct
transport) or a real hub (HubHandler): nothing here is mocked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flocklog.store import open_store

PYTHON = sys.executable
TIMEOUT = 120


def _rows(db: Path) -> int:
    store = open_store(f"sqlite:///{db}")
    store.create_schema()
    try:
        return store.count()
    finally:
        store.close()


def _run(code: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run(
        [PYTHON, str(script), str(tmp_path), *args], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


# A producer with a flush interval far longer than the test: only a lifecycle hook can deliver its records.
_PRODUCER = """
    import sys
    from pathlib import Path
    from flocklog import ExecutionLogger

    def make(tmp):
        return ExecutionLogger(
            "lc", transport="direct", database_url=f"sqlite:///{Path(tmp) / 'db.sqlite'}",
            spool_dir=Path(tmp) / "spool", batch_size=1000, capacity=10_000, flush_interval=3600.0,
        )
"""


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_execution_logger_in_a_multiprocessing_child_that_never_closes_delivers_every_record(
    tmp_path: Path, method: str
) -> None:
    result = _run(
        _PRODUCER
        + """
    import multiprocessing

    def child(tmp):
        logger = make(tmp)
        for i in range(10):
            logger.info("from child", i=i)
        # no close(): the child leaves through multiprocessing's os._exit, which skips atexit

    if __name__ == "__main__":
        ctx = multiprocessing.get_context(sys.argv[2])
        p = ctx.Process(target=child, args=(sys.argv[1],))
        p.start()
        p.join(100)
        sys.exit(p.exitcode)
    """,
        tmp_path,
        method,
    )
    assert result.returncode == 0, result.stderr
    assert _rows(tmp_path / "db.sqlite") == 10


def test_execution_logger_inherited_by_an_os_fork_child_delivers_the_childs_records(tmp_path: Path) -> None:
    result = _run(
        _PRODUCER
        + """
    import os
    logger = make(sys.argv[1])
    logger.info("parent")
    pid = os.fork()
    if pid == 0:
        for i in range(10):
            logger.info("child", i=i)
        sys.exit(0)
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
    """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert _rows(tmp_path / "db.sqlite") == 11  # the child's 10 once, the parent's 1 once


def _start(code: str, tmp_path: Path) -> subprocess.Popen[str]:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.Popen(
        [PYTHON, str(script), str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read() if proc.stderr else line


def test_sigterm_with_the_default_disposition_drains_and_exits_with_143(tmp_path: Path) -> None:
    proc = _start(
        _PRODUCER
        + """
    import time
    logger = make(sys.argv[1])
    for i in range(25):
        logger.info("before sigterm", i=i)
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
    """,
        tmp_path,
    )
    _wait_ready(proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(TIMEOUT) == 143
    assert _rows(tmp_path / "db.sqlite") == 25


def test_sigterm_flushes_then_chains_to_the_handler_installed_before(tmp_path: Path) -> None:
    marker = tmp_path / "previous-handler-ran"
    proc = _start(
        _PRODUCER
        + """
    import os, signal, time
    from pathlib import Path
    tmp = Path(sys.argv[1])
    count = {}

    def previous(signum, frame):
        # what a framework's handler would do: look at the world, then leave in its own way
        import sqlite3
        db = sqlite3.connect(tmp / "db.sqlite")
        count["rows"] = db.execute("select count(*) from flocklog_execution_log").fetchone()[0]
        (tmp / "previous-handler-ran").write_text(str(count["rows"]))
        os._exit(7)

    signal.signal(signal.SIGTERM, previous)
    logger = make(tmp)
    for i in range(25):
        logger.info("before sigterm", i=i)
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
    """,
        tmp_path,
    )
    _wait_ready(proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(TIMEOUT) == 7  # the previous handler decided how the process ends: not swallowed
    assert marker.read_text() == "25"  # and by the time it ran, the flush had delivered everything


def test_sigterm_left_ignored_when_the_application_ignores_it(tmp_path: Path) -> None:
    result = _run(
        _PRODUCER
        + """
    import os, signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logger = make(sys.argv[1])
    logger.info("one")
    os.kill(os.getpid(), signal.SIGTERM)  # delivered to this thread before kill() returns: ignored, or we die
    print("alive", flush=True)
    """,
        tmp_path,
    )
    assert result.returncode == 0 and result.stdout.strip() == "alive", result.stderr
    assert _rows(tmp_path / "db.sqlite") == 1


def test_hub_handler_and_execution_logger_drain_in_order_at_exit(tmp_path: Path) -> None:
    """Producers drain first, hub clients next, in-process hubs last: nothing is cut off by an earlier close."""
    result = _run(
        _PRODUCER
        + """
    import logging
    from flocklog import HubHandler
    from flocklog.hub import start_hub
    from flocklog import RotatingFileHandler
    tmp = Path(sys.argv[1])
    sink = RotatingFileHandler(str(tmp / "hub.log"), maxBytes=0, backupCount=0)
    hub = start_hub([sink])
    handler = HubHandler(hub.address, spool_dir=tmp / "hubspool")
    log = logging.getLogger("lc")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    for i in range(500):
        log.info("record %d", i)
    # no close, no stop: interpreter exit must drain the handler into the hub, then stop the hub
    """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "hub.log").read_text().splitlines()
    assert len(lines) == 500 and lines[-1].endswith("record 499")
    assert not any(p.stat().st_size for p in (tmp_path / "hubspool").glob("*.spool")), "spooled instead of sent"


def test_lifecycle_import_registers_no_fork_hook_when_fork_is_missing() -> None:
    """Windows has no os.register_at_fork: importing flocklog must still work (checked by hiding it)."""
    code = (
        "import os, random, tempfile, uuid, socket, logging.handlers, concurrent.futures, asyncio, multiprocessing\n"
        "del os.register_at_fork  # what Windows lacks; the stdlib modules above guard their own use of it\n"
        "import flocklog.hub.client, flocklog.hub.server, flocklog.pipeline.logger, flocklog.files\n"
        "print('ok')"
    )
    env = dict(os.environ)
    result = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_a_child_forked_while_a_parent_thread_makes_its_first_connection_can_still_resolve_names(
    tmp_path: Path,
) -> None:
    """A parent thread inside ``import encodings.idna`` (its first ``getaddrinfo``) at the fork left the child a
    module lock nobody releases: the child's own first lookup hung, or failed for good with "unknown encoding: idna".
    A stand-in ``stringprep`` (which encodings.idna imports) holds that import open at the moment of the fork."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "stringprep.py").write_text(
        textwrap.dedent(
            """
            import os, time
            open(os.environ["FLAG"], "w").close()
            while not os.path.exists(os.environ["GO"]):
                time.sleep(0.01)
            """
        )
    )
    code = """
        import os, signal, socket, sys, threading, time
        from flocklog.pipeline.logger import ExecutionLogger  # what a preloaded app imports before it forks
        sys.path.insert(0, os.path.join(sys.argv[1], "shadow"))
        os.environ.update(FLAG=os.path.join(sys.argv[1], "flag"), GO=os.path.join(sys.argv[1], "go"))
        first = threading.Thread(target=socket.getaddrinfo, args=("localhost", 1), daemon=True)
        first.start()
        deadline = time.monotonic() + 60
        while not os.path.exists(os.environ["FLAG"]) and first.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        pid = os.fork()
        if pid == 0:
            signal.alarm(20)  # a hung lookup ends the child with SIGALRM instead of hanging the test
            try:
                socket.getaddrinfo("localhost", 1)
                print("resolved", flush=True)
            except Exception as exc:
                print("failed:", repr(exc), flush=True)
            os._exit(0)
        open(os.environ["GO"], "w").close()
        _, status = os.waitpid(pid, 0)
        print("child status", status, flush=True)
    """
    result = _run(code, tmp_path)
    assert "resolved" in result.stdout, result.stdout + result.stderr
