"""``flocklog serve`` as a real process: SIGKILL and restart mid-run, graceful SIGTERM, status, refusing 0.0.0.0."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hubwriters import FORMAT, check, wait_until

from flocklog.errors import ConfigError, HubError
from flocklog.hub import query_status, start_hub


def write_config(tmp_path: Path, log_path: Path) -> Path:
    config = {
        "version": 1,
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(log_path)}},
        "root": {"level": "DEBUG", "handlers": ["file"]},
    }
    path = tmp_path / "hub.json"
    path.write_text(json.dumps(config))
    return path


def start_serve(config: Path, sock: Path, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "flocklog.cli", "serve", "--config", str(config), "--unix", str(sock), *extra],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            query_status(f"unix:{sock}", timeout=1.0)
            return proc
        except HubError:
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.05)
    raise AssertionError("flocklog serve did not come up")


def start_writers(
    address: str, env: dict[str, str], spool: Path, run: str, n: int, count: int, pause: float, prefix: str = "w"
) -> list[subprocess.Popen[str]]:
    env = dict(env, FLOCKLOG_HUB_ADDRESS=address, FLOCKLOG_HUB_SPOOL_DIR=str(spool))
    kwargs = json.dumps({"when_full": "block", "retry_interval": 0.1, "drain_timeout": 30})
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flocklog.stamps",
                "--handler",
                "flocklog.HubHandler",
                "--kwargs",
                kwargs,
                "--run",
                run,
                "--writer",
                f"{prefix}{i}",
                "--count",
                str(count),
                "--pause",
                str(pause),
                "--format",
                FORMAT,
            ],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]


def test_hub_killed_with_sigkill_and_restarted_mid_run_loses_and_duplicates_nothing(
    tmp_path: Path, run_id: str, subprocess_env: dict[str, str]
) -> None:
    log_path, sock, spool = tmp_path / "hub.log", tmp_path / "hub.sock", tmp_path / "spool"
    config = write_config(tmp_path, log_path)
    hub = start_serve(config, sock, subprocess_env)
    address = f"unix:{sock}"
    # Each writer needs >= 3 s (3000 pauses of 1 ms), the kill comes after a sixth of the records: on an idle or a
    # loaded machine alike the writers are still logging when the hub dies, and spool across the outage.
    writers = start_writers(address, subprocess_env, spool, run_id, n=4, count=3000, pause=0.001)
    try:
        wait_until(lambda: query_status(address)["records_written"] >= 2000, 120, "the hub to write 2000 records")
        hub.kill()  # SIGKILL: no drain, no ack for what was in flight
        hub.wait(10)
        wait_until(lambda: any(spool.glob("*.spool")), 60, "a writer to spool during the outage")
        assert all(w.poll() is None for w in writers), "the writers must still be running across the outage"
        hub = start_serve(config, sock, subprocess_env)  # the dead hub's socket file is stale: reclaimed
        for w in writers:
            out, _ = w.communicate(timeout=120)
            assert w.returncode == 0 and out.strip() == "3000"
        status = query_status(address)
        assert status["clients_spooled"] > 0, "the outage must have been bridged by the spool"
    finally:
        hub.send_signal(signal.SIGTERM)
        assert hub.wait(30) == 0
        for w in writers:
            w.kill()
    check(log_path, run=run_id, writers=4, per_writer=3000)
    assert not list(spool.glob("*.spool")), "every spool was replayed and removed"


def test_serve_drains_on_sigterm_exits_zero_and_status_prints_counters(
    tmp_path: Path, run_id: str, subprocess_env: dict[str, str]
) -> None:
    log_path, sock, spool = tmp_path / "hub.log", tmp_path / "hub.sock", tmp_path / "spool"
    hub = start_serve(write_config(tmp_path, log_path), sock, subprocess_env)
    try:
        (writer,) = start_writers(f"unix:{sock}", subprocess_env, spool, run_id, n=1, count=2000, pause=0.0)
        assert writer.wait(60) == 0
        shown = subprocess.run(
            [sys.executable, "-m", "flocklog.cli", "status", f"unix:{sock}", "--json"],
            env=subprocess_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        counters = json.loads(shown.stdout)
        assert counters["records_written"] == 2000 and counters["malformed"] == 0
        table = subprocess.run(
            [sys.executable, "-m", "flocklog.cli", "status", f"unix:{sock}"],
            env=subprocess_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert "records_written" in table.stdout and "2000" in table.stdout
    finally:
        hub.send_signal(signal.SIGTERM)
        _, err = hub.communicate(timeout=30)
    assert hub.returncode == 0, err
    assert "2000 records written" in err
    assert not sock.exists(), "a stopped hub removes its socket"
    check(log_path, run=run_id, writers=1, per_writer=2000)


def test_status_of_an_unreachable_hub_is_a_clear_error(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    with pytest.raises(HubError, match="cannot reach the flocklog hub"):
        query_status(f"unix:{tmp_path / 'nobody.sock'}", timeout=1.0)
    shown = subprocess.run(
        [sys.executable, "-m", "flocklog.cli", "status", f"unix:{tmp_path / 'nobody.sock'}"],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode != 0 and "cannot reach the flocklog hub" in shown.stderr


def test_tcp_hub_on_a_non_loopback_address_refuses_to_start_without_a_secret(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    with pytest.raises(ConfigError, match="secret"):
        start_hub([], address="tcp://0.0.0.0:0")
    env = {k: v for k, v in subprocess_env.items() if k != "FLOCKLOG_HUB_SECRET"}
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "flocklog.cli",
            "serve",
            "--config",
            str(write_config(tmp_path, tmp_path / "x.log")),
            "--tcp",
            "0.0.0.0:0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "without a shared secret" in refused.stderr
    with start_hub([], address="tcp://0.0.0.0:0", secret="s3cret") as hub:
        assert hub.status()["authenticated"]


def test_sighup_makes_serve_reopen_its_files_after_an_external_rotation(
    tmp_path: Path, run_id: str, subprocess_env: dict[str, str]
) -> None:
    log_path, sock, spool = tmp_path / "hub.log", tmp_path / "hub.sock", tmp_path / "spool"
    hub = start_serve(write_config(tmp_path, log_path), sock, subprocess_env)
    try:
        (before,) = start_writers(f"unix:{sock}", subprocess_env, spool, run_id, n=1, count=1000, pause=0.0)
        assert before.wait(60) == 0
        log_path.rename(tmp_path / "hub.log.1")  # what logrotate does
        hub.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not log_path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert log_path.exists(), "SIGHUP must reopen (recreate) the log file"
        (after,) = start_writers(f"unix:{sock}", subprocess_env, spool, run_id, n=1, count=1000, pause=0, prefix="v")
        assert after.wait(60) == 0
    finally:
        hub.send_signal(signal.SIGTERM)
        assert hub.wait(30) == 0
    assert "flk1 " + run_id + " w0 " in (tmp_path / "hub.log.1").read_text()
    new = log_path.read_text()
    assert " w0 " not in new and new.count(" v0 ") == 1000


def test_a_linger_longer_than_the_retry_interval_is_refused(tmp_path: Path) -> None:
    from flocklog import HubHandler

    with pytest.raises(ConfigError, match="linger"):
        HubHandler(f"unix:{tmp_path / 'hub.sock'}", linger=1.0, retry_interval=0.5, handle_sigterm=False)
