"""loguru in many processes, one rotating log: ``logger.add(flocklog.RotatingFileHandler(...))``.

Each process (spawned, so nothing is inherited) adds a flocklog handler as a loguru sink with ``enqueue=False``:
every message is one ``O_APPEND`` write, and rotation happens once per size boundary whoever reaches it. The
script then checks the set with ``flocklog verify``: every record once, none torn, archives in order.

    python examples/loguru/app.py --dir /tmp/loguru-demo --processes 4 --records 5000
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from pathlib import Path

from loguru import logger

import flocklog
from flocklog.stamps import format_stamp, payload_of
from flocklog.verify import VerifyOptions, verify_paths


def worker(log_file: str, run: str, name: str, records: int) -> None:
    logger.remove()  # loguru's default stderr sink is not wanted in the workers
    handler = flocklog.RotatingFileHandler(log_file, maxBytes=256 * 1024, backupCount=200)
    # loguru formats; the handler's default formatter passes the message through as one line.
    logger.add(handler, format="{time:YYYY-MM-DD HH:mm:ss.SSS} {level} [PID:{process}] {message}", enqueue=False)
    payload = payload_of(80)
    for seq in range(records):
        # The stamp (run, writer, sequence, time, CRC) is what lets verify prove the set complete.
        logger.info("{}", format_stamp(run, name, seq, time.time(), payload))
    logger.remove()  # loguru stops calling the handler, but does not close a stdlib handler: we do
    handler.close()  # finishes pending compression/retention (none here), releases the lock file


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="directory for app.log and its archives")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--run", default="loguru-demo")
    args = parser.parse_args()
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    log_file = str(directory / "app.log")
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=worker, args=(log_file, args.run, f"p{i}", args.records)) for i in range(args.processes)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
        if proc.exitcode != 0:
            print(f"worker {proc.pid} failed with exit code {proc.exitcode}", file=sys.stderr)
            return 1
    expected = {f"p{i}": args.records for i in range(args.processes)}
    report = verify_paths([log_file], VerifyOptions(run=args.run, expected_counts=expected, allow_expired=False))
    print(
        f"{report.records} records in {report.archives + 1} files: lost {report.lost}, "
        f"duplicated {report.duplicated}, torn {report.torn}"
    )
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
