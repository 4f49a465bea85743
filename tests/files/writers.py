"""Writer processes for the file-handler tests: forked, spawned, or started as separate interpreters."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flocklog.stamps import stamped_logger, write_stamped

FORMAT = "%(asctime)s %(levelname)s [PID:%(process)d] %(message)s"
SRC = Path(__file__).resolve().parents[2] / "src"


def build(handler_class: str, kwargs: dict[str, Any]) -> logging.Handler:
    module, _, name = handler_class.rpartition(".")
    cls = getattr(__import__(module, fromlist=[name]), name)
    handler: logging.Handler = cls(**kwargs)
    handler.setFormatter(logging.Formatter(FORMAT))
    return handler


def write(
    handler_class: str,
    kwargs: dict[str, Any],
    run: str,
    writer: str,
    count: int | None = None,
    duration: float | None = None,
    payload_size: int = 64,
    pause: float = 0.0,
) -> int:
    handler = build(handler_class, kwargs)
    logger = stamped_logger(f"test.writer.{writer}", handler)
    written = write_stamped(
        logger, run=run, writer=writer, count=count, duration=duration, payload_size=payload_size, pause=pause
    )
    handler.close()
    return written


def _child(queue: Any, args: tuple[Any, ...], extra: dict[str, Any]) -> None:
    queue.put((args[3], write(*args, **extra)))


def start_process(method: str, queue: Any, *args: Any, **extra: Any) -> multiprocessing.process.BaseProcess:
    """A writer by ``fork`` or ``spawn``; it reports ``(writer, records written)`` on ``queue``."""
    ctx = multiprocessing.get_context(method)
    proc = ctx.Process(target=_child, args=(queue, args, extra))
    proc.start()
    return proc


def start_interpreter(
    handler_class: str, kwargs: dict[str, Any], run: str, writer: str, **extra: Any
) -> subprocess.Popen[str]:
    """A writer in a separately started Python: shares nothing with the test process but the file names."""
    env = dict(os.environ, PYTHONPATH=str(SRC))
    cmd = [
        sys.executable,
        "-m",
        "flocklog.stamps",
        "--handler",
        handler_class,
        "--kwargs",
        json.dumps(kwargs),
        "--run",
        run,
        "--writer",
        writer,
        "--format",
        FORMAT,
    ]
    for key, value in extra.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


# Tests that need POSIX (fork, fcntl, owners and modes, TZ/tzset, /dev): skipped on Windows, where the CI job runs.
POSIX = pytest.mark.skipif(os.name == "nt", reason="needs POSIX (fork, fcntl, owners and modes, TZ, /dev)")
