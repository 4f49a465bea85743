"""How a batch leaves the process: to Celery (the ``logs`` queue) or straight to the store; and spool replay.

Every transport raises on failure and the logger decides what happens next (the spool, or direct writes), so a
batch is always somewhere: in memory, on the broker, in the database, or in a spool file on disk. The settings
(:mod:`flocklog._pipelinesettings`), the spool (:mod:`flocklog.pipeline.spool`) and the names the worker shares
(:mod:`flocklog.pipeline.protocol`) have modules of their own; their names stay importable from here.
"""

from __future__ import annotations

import collections
import hashlib
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from flocklog._pipelinesettings import (
    DEFAULT_SPOOL_DIR,
    MIN_RECEIPT_TIMEOUT,
    TRANSPORTS,
    PipelineSettings,
    batch_format,
    broker_timeout,
    check_at_least,
    check_settings,
    default_receipt_timeout,
    env_number,
    max_record_bytes,
    resolve_spool_dir,
    task_max_retries,
    transport_kind,
    visibility_timeout,
)
from flocklog.errors import PipelineError
from flocklog.pipeline.protocol import (
    CELERY_APP,
    QUEUE,
    RECEIPT_PREFIX,
    TASK_NAME,
    receipt_client,
    task_argument,
    worker_command,
)
from flocklog.pipeline.spool import SpoolTransport
from flocklog.record import ExecutionRecord

__all__ = [
    "CELERY_APP",
    "DEFAULT_SPOOL_DIR",
    "MAX_TASK_BYTES",
    "MIN_RECEIPT_TIMEOUT",
    "QUEUE",
    "RECEIPT_PREFIX",
    "TASK_NAME",
    "TRANSPORTS",
    "CeleryTransport",
    "DirectTransport",
    "PipelineSettings",
    "SpoolTransport",
    "Transport",
    "broker_timeout",
    "check_at_least",
    "check_settings",
    "default_receipt_timeout",
    "env_number",
    "make_transport",
    "max_record_bytes",
    "part_id",
    "receipt_client",
    "replay_spool",
    "resolve_spool_dir",
    "task_max_retries",
    "transport_kind",
    "visibility_timeout",
    "worker_command",
]


class Transport(Protocol):
    """What a backend must do to carry batches for :class:`~flocklog.ExecutionLogger`.

    - ``send(records, batch_id=None)`` returns only once the batch is handed over (on the broker, committed, on
      disk) and raises on any failure: the logger then falls back (direct, spool), so a transport never drops.
      It runs on the logger's sender thread, never on the caller's, and must bound its own waits (timeouts).
      ``batch_id`` names the batch for receipts; a resend of the same batch carries the same id.
    - ``close()`` releases connections; the logger calls it once, at its own ``close()``.
    Optional: ``overdue(everything=False)`` and ``confirmed(batch_ids)`` for receipts (see CeleryTransport).
    """

    name: str

    def send(self, records: Sequence[ExecutionRecord], batch_id: str | None = None) -> None: ...
    def close(self) -> None: ...


#: The largest batch text one task carries. A burst batch holds up to ``max_batch`` (5000) records of up to
#: ``max_record_bytes`` (256 KiB) each: over a GB, which Redis refuses (512 MB at most per value) and a worker would
#: hold several copies of. A larger batch goes as two tasks, halves split again until each fits.
MAX_TASK_BYTES = 16 * 1024 * 1024


def part_id(batch_id: str, index: int) -> str:
    """The batch id of part ``index`` of a split batch: 32 hex digits (a spool file's name takes no other shape),
    the same for every resend of the batch, so each part's receipt confirms it however often it was sent."""
    return hashlib.blake2b(f"{batch_id}/{index}".encode(), digest_size=16).hexdigest()


class CeleryTransport:
    """``send_task`` of one batch to the ``logs`` queue, JSON-serialised, with bounded broker timeouts.

    On a Redis broker the worker leaves a receipt (``flocklog:receipt:<batch id>``) once a batch is committed.
    Batches without a receipt after ``receipt_timeout`` seconds are handed back for resending: kombu's Redis
    transport pops a message before it records it as unacked, so a worker killed at that moment loses it from
    Redis, and only the producer still has it. A resend is harmless: the store ignores rows it already has.
    """

    name = "celery"

    def __init__(
        self, broker_url: str | None = None, *, database_url: str | None = None, receipt_timeout: float | None = None
    ) -> None:
        from flocklog.pipeline.celery_app import make_celery_app, resolve_broker_url

        url = resolve_broker_url(broker_url)
        self.app = make_celery_app(url, database_url=database_url)
        self.receipt_timeout = (
            check_at_least(f"receipt_timeout={receipt_timeout!r}", float(receipt_timeout), MIN_RECEIPT_TIMEOUT)
            if receipt_timeout is not None
            else default_receipt_timeout()
        )
        self.batch_format = batch_format()  # $FLOCKLOG_BATCH_FORMAT: 1 while older workers still run
        self._receipts = receipt_client(url)
        self.outstanding: dict[str, tuple[float, list[ExecutionRecord]]] = {}
        self._lock = threading.Lock()  # the sender thread and close() both look at the outstanding batches

    def send(self, records: Sequence[ExecutionRecord], batch_id: str | None = None) -> None:
        """Publish one task, or a batch over :data:`MAX_TASK_BYTES` as parts (each its own task, receipt and id
        from :func:`part_id`). A failure part-way raises like any other: the caller spools the whole batch, and
        whatever parts were already sent are stored once however often they come again."""
        batch_id = batch_id or uuid.uuid4().hex
        argument = task_argument(records, self.batch_format)  # outside the try: a record's fault is not the broker's
        if isinstance(argument, str) and len(argument) > MAX_TASK_BYTES and len(records) > 1:
            middle = len(records) // 2
            self.send(records[:middle], batch_id=part_id(batch_id, 0))
            self.send(records[middle:], batch_id=part_id(batch_id, 1))
            return
        try:
            self.app.send_task(
                TASK_NAME,
                args=[argument],
                kwargs={"batch_id": batch_id},
                queue=QUEUE,
                serializer="json",
                # Celery would otherwise repr() the whole batch into the message headers (for Flower and the
                # worker's log): half the sender's CPU per batch, spent holding the GIL the app needs.
                argsrepr=f"[<{len(records)} execution records>]",
                kwargsrepr=repr({"batch_id": batch_id}),
                retry=True,
                retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2},
            )
        except Exception as exc:  # kombu raises OperationalError and friends; all mean "not on the broker"
            raise PipelineError(f"broker unreachable: {type(exc).__name__}: {exc}") from exc
        if self._receipts is not None:
            with self._lock:
                self.outstanding[batch_id] = (time.monotonic(), list(records))

    def confirmed(self, batch_ids: Iterable[str]) -> set[str]:
        """The ids among ``batch_ids`` whose receipt is in Redis (the worker committed them); raises if Redis
        cannot be asked, so a caller never mistakes "unknown" for "not confirmed" and deletes nothing."""
        ids = list(batch_ids)
        if self._receipts is None or not ids:
            return set()
        pipe = self._receipts.pipeline(transaction=False)
        for batch_id in ids:
            pipe.exists(RECEIPT_PREFIX + batch_id)
        return {batch_id for batch_id, flag in zip(ids, pipe.execute(), strict=True) if flag}

    def overdue(self, *, everything: bool = False) -> list[tuple[str, list[ExecutionRecord]]]:
        """Drop batches whose receipt arrived; return those without one that are ``receipt_timeout`` old (or all
        of them, with ``everything``). Looks at Redis only when something is due, or when asked for everything."""
        with self._lock:
            if self._receipts is None or not self.outstanding:
                return []
            now = time.monotonic()
            oldest = min(sent for sent, _ in self.outstanding.values())
            if not everything and now - oldest < self.receipt_timeout:
                return []
            try:
                done = self.confirmed(self.outstanding)
            except Exception:  # broker unreachable: ask again later
                return []
            missing = []
            for batch_id, (sent, records) in list(self.outstanding.items()):
                if batch_id in done:
                    del self.outstanding[batch_id]
                elif everything or now - sent >= self.receipt_timeout:
                    missing.append((batch_id, records))
            return missing

    def close(self) -> None:
        if self._receipts is not None:
            self._receipts.close()
        self.app.close()


class DirectTransport:
    """Write batches straight into the store (no broker): the embedded default's worker, and the fallback."""

    name = "direct"

    def __init__(self, database_url: str | None = None, *, table: str | None = None) -> None:
        from flocklog.store import open_store

        self.store = open_store(database_url, table=table)
        self._ready = False

    def send(self, records: Sequence[ExecutionRecord], batch_id: str | None = None) -> None:
        if not self._ready:
            self.store.create_schema()
            self._ready = True
        self.store.write_batch(records)

    def close(self) -> None:
        self.store.close()


def make_transport(kind: str | None, **options: Any) -> Transport:
    kind = transport_kind(kind)
    if kind == "celery":
        return CeleryTransport(options.get("broker_url"), database_url=options.get("database_url"))
    if kind == "direct":
        return DirectTransport(options.get("database_url"), table=options.get("table"))
    return SpoolTransport(options.get("spool_dir"))  # transport_kind() let nothing else through


def replay_spool(
    spool: SpoolTransport,
    target: Transport,
    *,
    limit: int | None = None,
    counts: collections.Counter[str] | None = None,
) -> int:
    """Send spooled batches to ``target`` oldest first; stop at the first failure. Returns records replayed.

    A batch the worker already confirmed (its receipt is in Redis: it was delivered before it was spooled, or by
    an earlier replay whose receipt came late) is deleted instead of sent again, and counted in
    ``counts["already_confirmed"]``. A resent batch keeps its batch id, so either delivery's receipt confirms it.
    ``counts`` also gets ``replayed`` (records sent, including those sent before a failure stopped the replay)
    and ``batches_replayed`` / ``batches_already_confirmed`` (files).
    """
    spool.recover_orphans()
    confirmed: set[str] = set()
    ask = getattr(target, "confirmed", None)
    if ask is not None:
        ids = [batch_id for path in spool.pending() if (batch_id := spool.batch_id_of(path))]
        try:
            confirmed = ask(ids)
        except Exception:  # receipts unreadable: replay everything (a duplicate is harmless, a loss is not)
            confirmed = set()
    sent = 0
    for count, (claimed, records) in enumerate(spool.claim()):
        batch_id = spool.batch_id_of(claimed)
        if batch_id is not None and batch_id in confirmed:
            spool.done(claimed)
            if counts is not None:
                counts["already_confirmed"] += len(records)
                counts["batches_already_confirmed"] += 1
            continue
        try:
            target.send(records, batch_id=batch_id)
        except BaseException:
            spool.release(claimed)
            raise
        spool.done(claimed)
        sent += len(records)
        if counts is not None:
            counts["batches_replayed"] += 1
            counts["replayed"] += len(records)
        if limit is not None and count + 1 >= limit:
            break
    return sent
