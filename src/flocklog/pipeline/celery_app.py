"""The Celery preset for the execution-log pipeline, and the batch task its worker runs.

Start a worker with ``flocklog worker`` (or ``celery -A flocklog.pipeline.celery_app worker -Q logs``); watch it
with Flower: ``celery -A flocklog.pipeline.celery_app flower`` (workers started with ``-E``). Settings follow the
usual deployment guide for a write-behind queue: JSON only, UTC, late acks with ``reject_on_worker_lost`` (a batch
whose worker died is redelivered, and the store's ``ON CONFLICT DO NOTHING`` makes that harmless), prefetch 1, a
child recycled every 1000 tasks, 300 s hard / 240 s soft time limits, and explicit broker timeouts so a dead
broker fails fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init

from flocklog.pipeline.record import ExecutionRecord
from flocklog.pipeline.transports import (
    QUEUE,
    RECEIPT_PREFIX,
    TASK_NAME,
    SpoolTransport,
    broker_timeout,
    receipt_client,
    task_max_retries,
    visibility_timeout,
)

DEFAULT_BROKER_DIR = ".flocklog/broker"
DEAD_LETTER_DIR = ".flocklog/dead-letter"
_stores: dict[tuple[int, str, str], Any] = {}


def resolve_broker_url(url: str | None = None) -> str:
    """The explicit URL, else ``FLOCKLOG_BROKER_URL``, else kombu's filesystem broker under ``.flocklog/``."""
    return url or os.environ.get("FLOCKLOG_BROKER_URL") or "filesystem://"


def broker_options(url: str) -> dict[str, Any]:
    timeout = broker_timeout()
    if url.startswith("filesystem://"):
        folder = Path(os.environ.get("FLOCKLOG_BROKER_DIR", DEFAULT_BROKER_DIR)).resolve()
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            # kombu's exchange table; left unset it is ./control in whatever directory the process runs in.
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }
    visibility = visibility_timeout()
    return {
        "visibility_timeout": visibility,
        # A batch held by a worker that died is redelivered once the visibility timeout has passed; kombu looks
        # for such batches every interval x throttle seconds (default ~100 s): look every few seconds instead.
        "unacked_restore_interval": int(max(1, min(10, visibility / 3))),
        "unacked_restore_throttle": 1,
        # A worker killed while holding the restore mutex would block every restore for kombu's default 300 s.
        "unacked_mutex_expire": 30,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry_on_timeout": False,
        "max_retries": 1,
    }


def _survive_broker_loss_during_teardown() -> None:
    """Keep a worker alive when Redis goes away while it holds unacked batches (Celery 5.7 / kombu 5.7).

    On a lost connection Celery's consumer closes the broken connection; closing its channel restores unacked
    messages, which asks the channel for a new Redis pool, whose parameters come from a transport whose client
    kombu has already set to None. The AttributeError that follows is not a connection error, so the worker
    logs "Unrecoverable error" and exits instead of reconnecting (seen in tests/pipeline/test_pipeline_e2e.py
    when Redis is stopped mid-run). Raising the connection error it really is lets kombu ignore it, as it does
    every other error of a dead connection, and the consumer reconnects; the unacked batches stay in Redis and
    are restored by the visibility-timeout sweep (and the producers' receipts).
    """
    try:
        import redis
        from kombu.transport import redis as kombu_redis
    except ImportError:  # a non-Redis deployment
        return
    channel_class: Any = kombu_redis.Channel  # kombu's stubs leave out the private method
    original = channel_class._connparams
    if getattr(original, "flocklog_guarded", False):
        return

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        if self.connection is None or self.connection.client is None:
            raise redis.exceptions.ConnectionError("the broker connection is already closed")
        return original(self, asynchronous=asynchronous)

    _connparams.flocklog_guarded = True  # type: ignore[attr-defined]
    channel_class._connparams = _connparams


_survive_broker_loss_during_teardown()


def make_celery_app(
    broker_url: str | None = None, *, database_url: str | None = None, table: str | None = None, **overrides: Any
) -> Celery:
    """A Celery app with the pipeline's settings and the batch task registered; ``overrides`` win."""
    url = resolve_broker_url(broker_url)
    app = Celery("flocklog", broker=url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        enable_utc=True,
        timezone="UTC",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_max_tasks_per_child=1000,
        task_time_limit=300,
        task_soft_time_limit=240,
        task_routes={TASK_NAME: {"queue": QUEUE}},
        task_default_queue=QUEUE,
        task_ignore_result=True,
        broker_connection_timeout=broker_timeout(),
        broker_connection_retry_on_startup=True,
        broker_transport_options=broker_options(url),
        worker_hijack_root_logger=False,
        flocklog_database_url=database_url,
        flocklog_table=table,
        flocklog_max_retries=task_max_retries(),
    )
    app.conf.update(overrides)
    _register(app)
    # Retention rides along: `celery -A flocklog.pipeline.celery_app beat` (ONE beat per deployment) sends
    # flocklog.cleanup daily at 02:00; the logs worker runs it. Days/keep come from the app config or env.
    from flocklog.pipeline.beat import install_beat_schedule

    install_beat_schedule(app)
    return app


def _store_for(app: Celery) -> Any:
    from flocklog.store import open_store, resolve_database_url, resolve_table

    url = resolve_database_url(app.conf.get("flocklog_database_url"))
    table = resolve_table(app.conf.get("flocklog_table"))
    key = (os.getpid(), url, table)
    store = _stores.get(key)
    if store is None:  # one pool per worker child, made after the fork
        store = open_store(url, table=table)
        store.create_schema()
        _stores[key] = store
    return store


def _dead_letter(records: list[dict[str, Any]], reason: str) -> Path:
    """After the last retry a batch is kept on disk, never acked into nothing."""
    spool = SpoolTransport(os.environ.get("FLOCKLOG_DEAD_LETTER_DIR", DEAD_LETTER_DIR))
    spool.send([ExecutionRecord.from_wire(r) for r in records])
    os.write(2, f"flocklog: batch of {len(records)} moved to dead-letter {spool.directory}: {reason}\n".encode())
    return spool.directory


def _register(app: Celery) -> None:
    from flocklog.errors import StoreError

    @app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, shared=False)
    def write_batch(self: Task[Any, Any], records: list[dict[str, Any]], batch_id: str | None = None) -> int:
        """Write one batch idempotently; retry with backoff on database errors; dead-letter after the last."""
        valid = []
        for data in records:
            try:
                valid.append(ExecutionRecord.from_wire(data))
            except Exception as exc:  # one malformed record must not sink the batch
                os.write(2, f"flocklog: dropped malformed record in batch: {exc}\n".encode())
        try:
            written = int(_store_for(app).write_batch(valid))
        except StoreError as exc:
            retries = self.request.retries
            if retries >= app.conf.flocklog_max_retries:
                _dead_letter(records, str(exc))
                return 0
            raise self.retry(exc=exc, countdown=min(30.0, 0.5 * 2**retries)) from exc
        if batch_id:
            _leave_receipt(app, batch_id)
        return written


_receipt_clients: dict[tuple[int, str], Any] = {}


def _leave_receipt(app: Celery, batch_id: str) -> None:
    """Tell the producer this batch is committed (Redis brokers only); a failure here only causes a resend."""
    url = str(app.conf.broker_url or "")
    key = (os.getpid(), url)
    try:
        if key not in _receipt_clients:
            _receipt_clients[key] = receipt_client(url)
        client = _receipt_clients[key]
        if client is None:
            return
        client.set(RECEIPT_PREFIX + batch_id, "1", ex=86400)
    except Exception as exc:
        os.write(2, f"flocklog: could not leave a receipt for batch {batch_id}: {exc}\n".encode())


@worker_process_init.connect
def _fresh_pools_in_child(**_: Any) -> None:
    _stores.clear()  # pools inherited from the parent belong to the parent


app = make_celery_app()
