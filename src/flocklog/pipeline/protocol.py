"""What the producer and the worker agree on: the task's name and queue, the receipt keys, the worker's command.

A module of its own so that both sides import it without importing each other (``transports`` builds the Celery
app lazily from ``celery_app``; ``celery_app`` needs only these names, the settings, the spool and the record).

Receipts: once a batch is settled (committed, or its bad records dead-lettered), the worker sets
``RECEIPT_PREFIX + batch_id`` in the broker's Redis (any value, a TTL of a day). The producer reads them to drop
confirmed batches from memory, to resend the others after ``FLOCKLOG_RECEIPT_TIMEOUT``, and on spool replay to
delete spooled batches that were delivered after all. A batch id is 32 hex digits; a resend keeps its id.
"""

from __future__ import annotations

import sys
from typing import Any

from flocklog._pipelinesettings import broker_timeout

__all__ = ["CELERY_APP", "QUEUE", "RECEIPT_PREFIX", "RECEIPT_TTL", "TASK_NAME", "receipt_client", "worker_command"]

TASK_NAME = "flocklog.write_batch"
QUEUE = "logs"
RECEIPT_PREFIX = "flocklog:receipt:"
RECEIPT_TTL = 86400  # seconds: a spool older than this is resent on replay (harmless: the store ignores rows it has)
CELERY_APP = "flocklog.pipeline.celery_app"


def worker_command(*celery_args: str) -> list[str]:
    """The batch-writing worker's command line (``celery ... worker -Q logs``) plus ``celery_args``."""
    return [sys.executable, "-m", "celery", "-A", CELERY_APP, "worker", "-Q", QUEUE, *celery_args]


def receipt_client(url: str) -> Any:
    """A Redis client for batch receipts on ``url``, or None: only a Redis broker carries receipts."""
    if not url.startswith(("redis://", "rediss://")):
        return None
    import redis

    timeout = broker_timeout()
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
