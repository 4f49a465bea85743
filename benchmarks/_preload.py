"""What the pipeline benchmarks' parent imports before forking producers, as a ``--preload``ed web app's master has.

A module of its own because both ``pipeline.py`` (throughput) and ``pipeline_logger.py`` (``log()`` latency) need it.
"""

from __future__ import annotations

from typing import Any


def preload_transport(broker_url: str) -> None:
    """Import what a producer's Celery transport uses, so freshly forked producers do not import it while measured.

    Like with like: the COPY floor's processes inherit psycopg from their parent. A transport built and closed here
    imports the Celery app, kombu's Redis transport, the redis client and what a first ``send_task`` imports (~0.15 s
    of CPU per process, mostly ``import redis``), which every repetition's fresh producers would otherwise pay inside
    the timed window; a long-running app pays it once. For ``log()`` latency it matters twice: the sender thread
    imports while holding the GIL, so the caller's calls in that window each wait up to the interpreter's switch
    interval (5 ms). Nothing built here is used later: each producer still builds its own app and connects on its
    first send.
    """
    from flocklog.pipeline.transports import make_transport

    transport: Any = make_transport("celery", broker_url=broker_url)
    transport.app.amqp, transport.app.backend  # noqa: B018  # what a first send_task imports (celery.app.amqp)
    transport.close()
