"""The pipeline part of ``flocklog demo``: producers -> embedded broker -> a real Celery worker -> SQLite."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flocklog.pipeline.transports import worker_command


def _producer(records: int, env: dict[str, str], counter: Any) -> None:
    os.environ.update(env)
    # Anything kombu's filesystem transport still makes relative to the working directory lands in the demo's own.
    os.chdir(Path(env["FLOCKLOG_BROKER_DIR"]).parent)
    from flocklog.pipeline.logger import ExecutionLogger

    logger = ExecutionLogger("demo", transport="celery", batch_size=50)
    for i in range(records):
        logger.info("order processed", order=i, producer=os.getpid())
        if i % 100 == 99:
            with counter.get_lock():
                counter.value += 100
    logger.close()


def run_pipeline_demo(
    workdir: Path, *, producers: int = 4, records: int = 1000, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Run producers against the embedded defaults and wait until the worker has stored every record."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    workdir = workdir.resolve()  # the worker and the producers run inside it: every path must be absolute
    env = {
        "FLOCKLOG_BROKER_URL": "filesystem://",
        "FLOCKLOG_BROKER_DIR": str(workdir / "broker"),
        "FLOCKLOG_DATABASE_URL": f"sqlite:///{workdir / 'flocklog.db'}",
        "FLOCKLOG_SPOOL_DIR": str(workdir / "spool"),
        "FLOCKLOG_DEAD_LETTER_DIR": str(workdir / "dead-letter"),
    }
    worker = subprocess.Popen(
        worker_command("--pool", "solo", "-l", "warning"),
        env={**os.environ, **env},
        cwd=workdir,  # the embedded broker keeps everything under the demo's directory, never in the user's
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "worker.log", "w"),  # noqa: SIM115  # closed with the process
    )
    total = producers * records
    started = time.perf_counter()
    try:
        ctx = multiprocessing.get_context("fork")
        counter = ctx.Value("l", 0)
        procs = [ctx.Process(target=_producer, args=(records, env, counter)) for _ in range(producers)]
        for proc in procs:
            proc.start()
        for proc in procs:
            while proc.is_alive():
                if progress:
                    progress(counter.value, total)
                proc.join(0.1)
        logged_in = time.perf_counter() - started
        os.environ.update(env)
        from flocklog.store import open_store

        store = open_store(env["FLOCKLOG_DATABASE_URL"])
        store.create_schema()
        deadline = time.monotonic() + 120
        rows = store.count()
        while rows < total and time.monotonic() < deadline and worker.poll() is None:
            if progress:
                progress(rows, total)
            time.sleep(0.2)
            rows = store.count()
        seconds = time.perf_counter() - started
        store.close()
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    return {
        "producers": producers,
        "records_sent": total,
        "rows": rows,
        "duplicates": 0 if rows <= total else rows - total,
        "producers_done_s": round(logged_in, 2),
        "all_stored_s": round(seconds, 2),
        "rows_per_s": round(rows / seconds, 1) if seconds else 0.0,
        "database": env["FLOCKLOG_DATABASE_URL"],
    }
