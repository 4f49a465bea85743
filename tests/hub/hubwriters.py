"""Writer bodies for hub tests, importable by fork and spawn children alike."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from flocklog.hub.client import HubHandler
from flocklog.stamps import stamped_logger, write_stamped
from flocklog.verify import Report, VerifyOptions, verify_paths

FORMAT = "%(asctime)s %(levelname)s [PID:%(process)d] %(message)s"


def make_handler(address: str, spool_dir: str, **kwargs: object) -> HubHandler:
    handler = HubHandler(address, spool_dir=spool_dir, when_full="block", **kwargs)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter(FORMAT))
    return handler


def stamped_writer(address: str, spool_dir: str, run: str, writer: str, count: int, pause: float = 0.0) -> int:
    """Log ``count`` stamped records through a HubHandler and close it (drain) before returning."""
    handler = make_handler(address, spool_dir)
    logger = stamped_logger(f"hubtest.{writer}", handler)
    written = write_stamped(logger, run=run, writer=writer, count=count, payload_size=32, pause=pause)
    handler.close()
    return written


def env_writer(run: str, writer: str, count: int) -> int:
    """A writer that knows nothing but ``FLOCKLOG_HUB_ADDRESS`` (and the spool dir from the environment)."""
    handler = HubHandler(when_full="block")
    handler.setFormatter(logging.Formatter(FORMAT))
    logger = stamped_logger(f"hubtest.{writer}", handler)
    written = write_stamped(logger, run=run, writer=writer, count=count, payload_size=32)
    handler.close()
    return written


def check(path: Path, *, run: str, writers: int, per_writer: int) -> Report:
    report = verify_paths(
        [str(path)], VerifyOptions(expect_per_writer=per_writer, writers=writers, run=run, allow_expired=False)
    )
    assert report.records == writers * per_writer, report.to_dict()
    assert (report.lost, report.duplicated, report.torn) == (0, 0, 0), report.to_dict()
    assert report.ok, report.to_dict()
    return report


def pid() -> int:
    return os.getpid()
