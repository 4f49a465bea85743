"""The Celery preset for the execution-log pipeline, and the batch task its worker runs.

Start a worker with ``flocklog worker`` (or ``celery -A flocklog.pipeline.celery_app worker -Q logs``); watch it
with Flower: ``celery -A flocklog.pipeline.celery_app flower`` (workers started with ``-E``). Settings follow the
usual deployment guide for a write-behind queue: JSON only, UTC, late acks with ``reject_on_worker_lost`` (a batch
whose worker died is redelivered, and the store's ``ON CONFLICT DO NOTHING`` makes that harmless), prefetch 1, a
child recycled every 1000 tasks, 300 s hard / 240 s soft time limits, and explicit broker timeouts so a dead
broker fails fast.

Importing this module builds nothing: the module attribute ``app`` (what ``celery -A`` looks up) is made on first
access, and so are the embedded broker's folders and the kombu guard below.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from celery import Celery, Task
from celery.signals import worker_init, worker_process_init

from flocklog._pipelinesettings import (
    adopt_spools,
    broker_timeout,
    env_number,
    task_max_retries,
    visibility_timeout,
)
from flocklog.pipeline.protocol import (
    QUEUE,
    RECEIPT_PREFIX,
    TASK_NAME,
    decode_batch,
    decode_rows,
    load_batch,
    plain_rows,
    receipt_client,
)
from flocklog.record import ExecutionRecord

DEFAULT_BROKER_DIR = ".flocklog/broker"
_stores: dict[tuple[int, str, str], Any] = {}
_app: Celery | None = None
_app_lock = threading.Lock()


def resolve_broker_url(url: str | None = None) -> str:
    """The explicit URL, else ``FLOCKLOG_BROKER_URL``, else kombu's filesystem broker under ``.flocklog/``."""
    return url or os.environ.get("FLOCKLOG_BROKER_URL") or "filesystem://"


def task_retry_delay() -> float:
    """Seconds before a batch's first database retry (``$FLOCKLOG_TASK_RETRY_DELAY``, default 0.5); each further
    retry waits twice as long, up to 30 s. With the default 8 retries a batch waits ~90 s before dead-lettering."""
    return env_number("FLOCKLOG_TASK_RETRY_DELAY", 0.5, minimum=0.0)


MAX_RETRY_DELAY = 30.0


def task_time_limit() -> float:
    """Seconds one batch may take before its child is killed (``$FLOCKLOG_TASK_TIME_LIMIT``, default 300); at
    80 % of it the write is interrupted and the batch retried (see ``write_batch``)."""
    return env_number("FLOCKLOG_TASK_TIME_LIMIT", 300.0, minimum=1.0)


def retry_countdown(retries: int, first: float | None = None) -> float:
    """The wait before retry number ``retries + 1``: ``first`` (default :func:`task_retry_delay`), doubling."""
    base = task_retry_delay() if first is None else first
    return float(min(MAX_RETRY_DELAY, base * 2**retries))


def broker_dir() -> Path:
    """The embedded (filesystem) broker's folder: ``$FLOCKLOG_BROKER_DIR``, else ``.flocklog/broker``."""
    return Path(os.environ.get("FLOCKLOG_BROKER_DIR", DEFAULT_BROKER_DIR)).resolve()


def broker_options(url: str, *, create: bool = True) -> dict[str, Any]:
    """kombu transport options for ``url``; for the embedded broker, its folders (made unless ``create=False``)."""
    timeout = broker_timeout()
    if url.startswith("filesystem://"):
        folder = broker_dir()
        if create:
            for sub in ("queue", "processed", "control"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            # kombu's default is ./control in the working directory: keep everything under the broker's folder.
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

    Installed by :func:`make_celery_app` (idempotent), not at import.
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


def make_celery_app(
    broker_url: str | None = None, *, database_url: str | None = None, table: str | None = None, **overrides: Any
) -> Celery:
    """A Celery app with the pipeline's settings and the batch task registered; ``overrides`` win."""
    _survive_broker_loss_during_teardown()
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
        # The producer stamps these into each message, so producer and worker read the same variable.
        task_time_limit=task_time_limit(),
        task_soft_time_limit=task_time_limit() * 0.8,
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
        flocklog_retry_delay=task_retry_delay(),
        flocklog_check_database=True,
        flocklog_adopt_spools=adopt_spools(),  # $FLOCKLOG_ADOPT_SPOOLS; a bad value fails here, at start
        # The worker imports this at start; its worker_ready handler starts the spool adopter in the main
        # process (an import here would be a cycle: the adopter sends through the transports, which use this).
        imports=("flocklog.pipeline._adopter",),
    )
    app.conf.update(overrides)
    _register(app)
    # Retention rides along: `celery -A flocklog.pipeline.celery_app beat` (ONE beat per deployment) sends
    # flocklog.cleanup daily at 02:00; the logs worker runs it. Days/keep come from the app config or env.
    from flocklog.pipeline.beat import install_beat_schedule

    install_beat_schedule(app)
    return app


def get_app() -> Celery:
    """The module's app (``celery -A flocklog.pipeline.celery_app``), built from the environment on first use."""
    global _app
    with _app_lock:
        if _app is None:
            _app = make_celery_app()
        return _app


def __getattr__(name: str) -> Any:
    """``app`` (and ``celery``, the other name ``celery -A`` tries) are built lazily: importing builds nothing."""
    if name in ("app", "celery"):
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _database_of(app: Celery) -> tuple[str, str]:
    from flocklog.store import resolve_database_url, resolve_table

    return resolve_database_url(app.conf.get("flocklog_database_url")), resolve_table(app.conf.get("flocklog_table"))


def check_database(database_url: str | None = None, table: str | None = None) -> None:
    """Connect and create the schema (idempotent): a StoreError/ConfigError here means the worker cannot store
    anything, so it must not start taking batches off the queue."""
    from flocklog.store import open_store

    store = open_store(database_url, table=table)
    try:
        store.create_schema()
    finally:
        store.close()


def database_problem(database_url: str | None = None, table: str | None = None) -> str | None:
    """One line saying why the worker's database is unusable, or None when it is fine."""
    from flocklog.errors import FlocklogError
    from flocklog.store import redact, resolve_database_url

    try:
        check_database(database_url, table)
    except FlocklogError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"the database {redact(resolve_database_url(database_url))} is not usable: {first}"
    return None


@worker_init.connect
def _refuse_to_start_without_a_database(sender: Any = None, **_: Any) -> None:
    """A worker that cannot reach its database would take batches off the queue and retry them into the dead
    letters: refuse to start instead, with one line (``celery -A ... worker`` as well as ``flocklog worker``)."""
    app = getattr(sender, "app", None)
    if app is None or not app.conf.get("flocklog_check_database"):
        return
    problem = database_problem(*_database_of(app))
    if problem is not None:
        os.write(2, f"flocklog worker: refusing to start: {problem}\n".encode("utf-8", "backslashreplace"))
        os._exit(1)  # before any pool or consumer exists; SystemExit here would print Celery's traceback


def _store_for(app: Celery) -> Any:
    from flocklog.store import open_store

    url, table = _database_of(app)
    key = (os.getpid(), url, table)
    store = _stores.get(key)
    if store is None:  # one pool per worker child, made after the fork
        store = open_store(url, table=table)
        store.create_schema()
        _stores[key] = store
    return store


def _parse(records: Any) -> tuple[list[ExecutionRecord], list[tuple[Any, str]]]:
    """Records of a task message (an :func:`encode_batch` text, or a list of ``to_wire()`` dicts), and the items
    that are not records at all (kept, with the reason)."""
    if isinstance(records, str):
        return decode_batch(records)
    if not isinstance(records, list):
        return [], [(records, "the task's records argument is not a list")]
    valid: list[ExecutionRecord] = []
    malformed: list[tuple[Any, str]] = []
    for data in records:
        try:
            if not isinstance(data, dict):
                raise TypeError(f"expected an object, got {type(data).__name__}")
            valid.append(ExecutionRecord.from_wire(data))
        except Exception as exc:  # one malformed record must not sink the batch
            malformed.append((data, f"not an execution-log record: {exc}"))
    return valid, malformed


def _forget_store(app: Celery) -> None:
    """Drop this child's pool after a batch was interrupted mid-query: its connection may be mid-protocol. Not
    closed here (closing could wait on that very connection); the next batch opens a fresh pool."""
    url, table = _database_of(app)
    _stores.pop((os.getpid(), url, table), None)


def _register(app: Celery) -> None:
    from celery.exceptions import SoftTimeLimitExceeded

    from flocklog.errors import StoreError
    from flocklog.pipeline.deadletter import park_batch, park_refused
    from flocklog.store import write_isolated

    # max_retries=None: Celery's own default (3) would end the retries before flocklog_max_retries and fail the
    # task, which acks the batch into nothing. The task counts its retries itself and dead-letters after the last.
    @app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, shared=False, max_retries=None)
    def write_batch(self: Task[Any, Any], records: str | list[dict[str, Any]], batch_id: str | None = None) -> int:
        """Write one batch idempotently, a refused record split out and kept aside; retry with backoff while the
        database fails; after the last retry keep the batch in the dead letters (replayable). Never acked into
        nothing: if even the dead-letter disk fails, the task retries again.

        An encoded batch whose rows are all exactly what encode_batch writes goes to the store as those rows
        (``write_wire_rows``: no records built); whatever that path does not take (a malformed row, a poison
        record, SQLite, a partitioned table) is decoded into records and written as before, so what is stored and
        kept aside is the same.
        """
        parsed: tuple[list[ExecutionRecord], list[tuple[Any, str]]] | None = None
        retries = int(self.request.retries or 0)
        try:
            try:
                store = _store_for(app)
                if isinstance(records, str):
                    rows, why = load_batch(records)
                    if rows is None:
                        parsed = [], [(records, why)]
                    else:
                        written = store.write_wire_rows(rows) if plain_rows(rows) else None
                        if written is not None:
                            _leave_receipt(app, batch_id)
                            return int(written)
                        parsed = decode_rows(rows)
                else:
                    parsed = _parse(records)
                outcome = write_isolated(store, parsed[0])
            except SoftTimeLimitExceeded as slow:
                # A write stuck past the soft limit (a lock, a hung server) would fail the task, and a failed task
                # is acked: the batch would be gone. It is a database failure like any other: retry, dead-letter.
                _forget_store(app)
                raise StoreError(f"the batch write took longer than the soft time limit ({slow!r})") from slow
        except StoreError as exc:
            if retries < int(app.conf.flocklog_max_retries):
                raise self.retry(exc=exc, countdown=retry_countdown(retries, app.conf.flocklog_retry_delay)) from exc
            valid, malformed = parsed if parsed is not None else _parse(records)
            try:
                park_batch(valid, f"{exc} (after {retries} retries)")
                park_refused(malformed)
            except OSError as disk:
                os.write(2, f"flocklog: dead-letter write failed ({disk}); retrying the batch\n".encode())
                raise self.retry(exc=exc, countdown=MAX_RETRY_DELAY) from exc
            _leave_receipt(app, batch_id)
            return 0
        try:
            park_refused([*outcome.refused, *parsed[1]])
        except OSError as disk:  # the good rows are stored; only these few are at stake
            lost = len(outcome.refused) + len(parsed[1])
            os.write(2, f"flocklog: could not keep {lost} refused records: {disk}\n".encode())
        _leave_receipt(app, batch_id)
        return outcome.written


_receipt_clients: dict[tuple[int, str], Any] = {}


def _leave_receipt(app: Celery, batch_id: str | None) -> None:
    """Tell the producer this batch is committed (Redis brokers only); a failure here only causes a resend."""
    if not batch_id:
        return
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
    _receipt_clients.clear()


__all__ = [
    "DEFAULT_BROKER_DIR",
    "broker_options",
    "check_database",
    "database_problem",
    "get_app",
    "make_celery_app",
    "resolve_broker_url",
    "retry_countdown",
    "task_retry_delay",
    "task_time_limit",
]
