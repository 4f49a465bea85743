"""Crashes between writing and acking, partly replayed spools, spools of exited writers: exactly once, promptly.

``sigkill_restarts.py`` beside this file runs the random-SIGKILL case 100 times (``--runs 25 --kills 4``); here it
runs twice with two kills, so CI sees it on every push.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

from hubwriters import batch_frame, last_json, open_raw, run_script, serve, stop_serve, wait_until
from sigkill_restarts import one_run

from flocklog.hub import frames, query_status, start_hub


def _batch(cid: str, seq: int, n: int) -> bytes:
    return batch_frame(cid, seq, (f"{cid}-{seq}-{i}" for i in range(n)))


def test_a_batch_written_but_not_acked_when_the_hub_was_killed_is_not_written_again_after_restart(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    log_path = tmp_path / "hub.log"
    proc, address = serve(tmp_path, log_path, subprocess_env)
    unacked = open_raw(address)
    try:
        unacked.sendall(_batch("crash", 0, 10))  # its ack is never read: the client cannot know it arrived
        wait_until(lambda: query_status(address)["records_written"] == 10, 60, "the batch written")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        unacked.close()
    proc, address = serve(tmp_path, log_path, subprocess_env)
    try:
        with open_raw(address) as resend:  # the client resends what was never acked, as HubHandler does
            resend.sendall(_batch("crash", 0, 10))
            assert frames.unpack(frames.read_payload(resend, frames.DEFAULT_MAX_FRAME)) == {"t": "ack", "seq": 0}
        status = query_status(address)
    finally:
        stop_serve(proc)
    assert status["duplicate_batches"] == 1 and status["durable_dedup"], status
    lines = log_path.read_text().splitlines()
    assert sorted(lines) == sorted(f"crash-0-{i}" for i in range(10))


def test_hub_killed_at_random_moments_and_restarted_writes_every_record_exactly_once(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    # Back in CI since the journal rolls back a batch a kill interrupted (0 of 300,000 wrong over 100 kills); the
    # named windows themselves are tested one by one in test_crash_windows.py.
    for rep in range(2):
        result = one_run(tmp_path / f"rep{rep}", subprocess_env, seed=rep, kills=2)
        assert (result["lost"], result["duplicated"], result["torn"]) == (0, 0, 0), result


SPOOLER = """
import logging, sys
from flocklog import HubHandler
handler = HubHandler(sys.argv[1], spool_dir=sys.argv[2], batch_size=100, drain_timeout=0.3, retry_interval=0.1)
handler.setFormatter(logging.Formatter("%(message)s"))
for i in range(int(sys.argv[3])):
    handler.handle(logging.makeLogRecord({"msg": f"spooled {i}", "levelno": 20}))
"""

ADOPTER = """
import json, logging, sys, time
from flocklog import HubHandler
handler = HubHandler(sys.argv[1], spool_dir=sys.argv[2], retry_interval=0.1)
want = int(sys.argv[3])
deadline = time.monotonic() + 90
while handler.stats()["replayed"] < want and time.monotonic() < deadline:  # no record emitted here at all
    time.sleep(0.05)
print(json.dumps(handler.stats()), flush=True)
if sys.argv[4] == "wait":
    time.sleep(600)
handler.close()
"""


class SlowFileHandler(logging.FileHandler):
    """A hub-side writer slow enough that a replay is still running when its client is killed."""

    def emit(self, record: logging.LogRecord) -> None:
        time.sleep(0.0005)
        super().emit(record)


def test_a_spool_left_by_an_exited_writer_is_replayed_by_a_new_client_before_it_logs_anything(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    sock, spool, log_path = tmp_path / "hub.sock", tmp_path / "spool", tmp_path / "hub.log"
    run_script(SPOOLER, subprocess_env, f"unix:{sock}", str(spool), "700")
    assert len(list(spool.glob("*.spool"))) == 1
    file_handler = logging.FileHandler(log_path)
    try:
        with start_hub([file_handler], address=f"unix:{sock}"):
            stats = last_json(run_script(ADOPTER, subprocess_env, f"unix:{sock}", str(spool), "700", "exit").stdout)
    finally:
        file_handler.close()
    assert stats["adopted_spools"] == 1 and stats["replayed"] == 700 and stats["emitted"] == 0, stats
    assert sum(line.startswith("spooled ") for line in log_path.read_text().splitlines()) == 700
    assert not list(spool.glob("*.spool"))


def test_flocklog_serve_replays_the_spool_of_an_exited_writer_with_no_client_starting_at_all(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    sock, spool, log_path = tmp_path / "hub.sock", tmp_path / "spool", tmp_path / "hub.log"
    run_script(SPOOLER, subprocess_env, f"unix:{sock}", str(spool), "700")  # the hub was down; the writer exited
    assert len(list(spool.glob("*.spool"))) == 1

    def replayed() -> int:
        return sum(line.startswith("spooled ") for line in log_path.read_text().splitlines())

    env = dict(subprocess_env, FLOCKLOG_HUB_SPOOL_DIR=str(spool))  # serve's default: the clients' spool dir
    proc, _ = serve(tmp_path, log_path, env, sock=sock)
    try:
        wait_until(lambda: log_path.exists() and replayed() == 700, 60, "serve to replay the abandoned spool")
        wait_until(lambda: not list(spool.glob("*.spool")), 60, "the replayed spool to be removed")
    finally:
        stop_serve(proc)
    assert replayed() == 700


def test_flocklog_serve_replays_a_spool_abandoned_while_it_runs(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    sock, spool, log_path = tmp_path / "hub.sock", tmp_path / "spool", tmp_path / "hub.log"
    env = dict(subprocess_env, FLOCKLOG_HUB_SPOOL_DIR=str(spool))
    proc, _ = serve(tmp_path, log_path, env, sock=sock)
    try:
        # A writer that could not reach this hub (a wrong address) spools into its directory and exits.
        run_script(SPOOLER, subprocess_env, f"unix:{tmp_path / 'nowhere.sock'}", str(spool), "300")

        def replayed() -> int:
            return sum(line.startswith("spooled ") for line in log_path.read_text().splitlines())

        wait_until(lambda: log_path.exists() and replayed() == 300, 60, "serve to replay the spool left meanwhile")
        wait_until(lambda: not list(spool.glob("*.spool")), 60, "the replayed spool to be removed")
    finally:
        stop_serve(proc)


def test_a_partly_replayed_spool_is_resumed_where_the_killed_replayer_stopped(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    sock, spool, log_path = tmp_path / "hub.sock", tmp_path / "spool", tmp_path / "hub.log"
    run_script(SPOOLER, subprocess_env, f"unix:{sock}", str(spool), "5000")
    file_handler = SlowFileHandler(log_path)
    file_handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        with start_hub([file_handler], address=f"unix:{sock}") as hub:
            first = subprocess.Popen(
                [sys.executable, "-c", ADOPTER, f"unix:{sock}", str(spool), "5000", "wait"],
                env=subprocess_env,
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                wait_until(lambda: hub.status()["records_written"] >= 1500, 120, "the replay under way")
            finally:
                first.kill()  # mid-replay, with no chance to save anything more
                first.wait(30)
            written_before = hub.status()["records_written"]
            assert written_before < 5000, "the replay finished before the kill: make the hub slower"
            stats = last_json(
                run_script(
                    ADOPTER, subprocess_env, f"unix:{sock}", str(spool), str(5000 - written_before), "exit", timeout=300
                ).stdout
            )
            wait_until(lambda: hub.status()["records_written"] >= 5000, 120, "the rest replayed")
            status = hub.status()
    finally:
        file_handler.close()
    assert stats["adopted_spools"] == 1, stats
    # At most the one batch in flight at the kill is sent again (and skipped by the hub), not the whole prefix.
    assert status["duplicate_batches"] <= 1, status
    lines = log_path.read_text().splitlines()
    assert sorted(lines) == sorted(f"spooled {i}" for i in range(5000))
    assert json.dumps(stats)
