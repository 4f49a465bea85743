"""SIGKILL a busy ``flocklog serve`` at random moments and restart it; count lost, duplicated and torn records.

Run ``python tests/hub/sigkill_restarts.py --runs 25 --kills 4`` for 100 kills (the figure in issue #10; ``--pause 0``
makes full batches, so more kills land inside a long write); the test suite runs a few kills through :func:`one_run`,
and ``test_crash_windows.py`` kills the hub at each named point of a batch instead of at random. Writers are
separate interpreters logging stamped records through HubHandler; the hub writes through flocklog's
RotatingFileHandler (the batch path: one write per chunk).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"
FORMAT = "%(asctime)s %(levelname)s [PID:%(process)d] %(message)s"


def _serve(config: Path, sock: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    from flocklog.errors import HubError
    from flocklog.hub import query_status

    proc = subprocess.Popen(
        [sys.executable, "-m", "flocklog.cli", "serve", "--config", str(config), "--unix", str(sock)],
        env=env,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            query_status(f"unix:{sock}", timeout=1.0)
            return proc
        except HubError:
            if proc.poll() is not None:
                raise RuntimeError("flocklog serve exited at start") from None
            time.sleep(0.05)
    raise RuntimeError("flocklog serve did not come up")


def one_run(
    workdir: Path,
    env: dict[str, str],
    *,
    seed: int,
    kills: int = 1,
    writers: int = 4,
    count: int = 3000,
    pause: float = 0.0005,
) -> dict[str, Any]:
    """One run: ``writers`` processes log ``count`` records each while the hub is SIGKILLed ``kills`` times."""
    from flocklog.verify import VerifyOptions, verify_paths

    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    log_path, sock, spool = workdir / "hub.log", workdir / "hub.sock", workdir / "spool"
    run = f"k{seed}x{os.getpid()}"
    config = workdir / "hub.json"
    handler = {"class": "flocklog.RotatingFileHandler", "filename": str(log_path)}
    config.write_text(json.dumps({"version": 1, "handlers": {"f": handler}, "root": {"handlers": ["f"]}}))
    wenv = dict(env, FLOCKLOG_HUB_ADDRESS=f"unix:{sock}", FLOCKLOG_HUB_SPOOL_DIR=str(spool))
    kwargs = json.dumps({"when_full": "block", "retry_interval": 0.1, "drain_timeout": 60})
    hub = _serve(config, sock, env)
    command = [sys.executable, "-m", "flocklog.stamps", "--handler", "flocklog.HubHandler", "--kwargs", kwargs]
    options = ["--run", run, "--count", str(count), "--pause", str(pause), "--format", FORMAT]
    procs = [
        subprocess.Popen(
            [*command, *options, "--writer", f"w{i}"],
            env=wenv,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(writers)
    ]
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.1, 1.5))
            hub.send_signal(signal.SIGKILL)
            hub.wait(30)
            time.sleep(rng.uniform(0.0, 0.3))
            hub = _serve(config, sock, env)
        for proc in procs:
            out, _ = proc.communicate(timeout=300)
            if proc.returncode != 0 or out.strip() != str(count):
                raise RuntimeError(f"a writer failed: {proc.returncode} {out!r}")
    finally:
        hub.send_signal(signal.SIGTERM)
        hub.wait(60)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    report = verify_paths(
        [str(log_path)], VerifyOptions(expect_per_writer=count, writers=writers, run=run, allow_expired=False)
    )
    return {"records": report.records, "lost": report.lost, "duplicated": report.duplicated, "torn": report.torn}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--kills", type=int, default=4, help="SIGKILLs per run")
    parser.add_argument(
        "--pause", type=float, default=0.0005, help="seconds between records (0: full batches, long writes)"
    )
    parser.add_argument("--count", type=int, default=3000, help="records per writer")
    parser.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    parser.add_argument("--out", default=None, help="write the summary JSON here")
    args = parser.parse_args()
    import tempfile

    base = Path(args.dir or tempfile.mkdtemp(prefix="flocklog-sigkill-"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH", "")])))
    totals = {"runs": 0, "kills": 0, "records": 0, "lost": 0, "duplicated": 0, "torn": 0, "bad_runs": 0}
    for seed in range(args.runs):
        result = one_run(base / f"run{seed}", env, seed=seed, kills=args.kills, pause=args.pause, count=args.count)
        totals["runs"] += 1
        totals["kills"] += args.kills
        for key in ("records", "lost", "duplicated", "torn"):
            totals[key] += result[key]
        totals["bad_runs"] += bool(result["lost"] or result["duplicated"] or result["torn"])
        print(json.dumps({"run": seed, **result}), flush=True)
    print(json.dumps(totals))
    if args.out:
        Path(args.out).write_text(json.dumps(totals, indent=2) + "\n")
    return 0 if totals["bad_runs"] == 0 else 1


if __name__ == "__main__":
    sys.path.insert(0, str(SRC))
    raise SystemExit(main())
