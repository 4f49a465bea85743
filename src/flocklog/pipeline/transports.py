"""How a batch leaves the process: to Celery (the ``logs`` queue), straight to the store, or to a local spool.

Every transport raises on failure and the logger decides what happens next (the spool, or direct writes), so a
batch is always somewhere: in memory, on the broker, in the database, or in a spool file on disk.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from flocklog._proc import pid_alive
from flocklog.errors import ConfigError, PipelineError
from flocklog.pipeline.record import ExecutionRecord

DEFAULT_SPOOL_DIR = ".flocklog/spool"
TASK_NAME = "flocklog.write_batch"
QUEUE = "logs"


class Transport(Protocol):
    name: str

    def send(self, records: Sequence[ExecutionRecord]) -> None: ...
    def close(self) -> None: ...


def resolve_spool_dir(spool_dir: str | os.PathLike[str] | None = None) -> Path:
    return Path(spool_dir or os.environ.get("FLOCKLOG_SPOOL_DIR") or DEFAULT_SPOOL_DIR)


RECEIPT_PREFIX = "flocklog:receipt:"
CELERY_APP = "flocklog.pipeline.celery_app"


def worker_command(*celery_args: str) -> list[str]:
    """The batch-writing worker's command line (``celery ... worker -Q logs``) plus ``celery_args``."""
    return [sys.executable, "-m", "celery", "-A", CELERY_APP, "worker", "-Q", QUEUE, *celery_args]


def env_number(name: str, default: float, *, integer: bool = False, minimum: float = 0.0) -> float:
    """``$name`` as a number: a typo there is a :class:`ConfigError` naming the variable at start-up, not a
    ``ValueError`` from deep inside Celery's configuration or a sender thread."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"{name}={raw!r} is not {kind}") from None
    return check_at_least(f"{name}={raw!r}", value, minimum)


def check_at_least(what: str, value: float, minimum: float) -> float:
    """``value`` if it is finite and at least ``minimum``; NaN and inf are refused too (redis-py overflows on inf
    later), with a ConfigError that starts with ``what``."""
    if not minimum <= value < math.inf:
        raise ConfigError(f"{what} must be a finite number of at least {minimum:g}")
    return value


def broker_timeout() -> float:
    """Seconds for every connect and socket wait on the broker (``$FLOCKLOG_BROKER_TIMEOUT``, default 3)."""
    return env_number("FLOCKLOG_BROKER_TIMEOUT", 3.0, minimum=0.001)


def visibility_timeout() -> float:
    """Seconds before Redis redelivers a batch a dead worker held (``$FLOCKLOG_VISIBILITY_TIMEOUT``, 3600)."""
    return env_number("FLOCKLOG_VISIBILITY_TIMEOUT", 3600.0, minimum=1.0)


MIN_RECEIPT_TIMEOUT = 0.1  # 0 would resend every outstanding batch at each check


def default_receipt_timeout() -> float:
    """Seconds a producer waits for a batch's receipt before resending it (``$FLOCKLOG_RECEIPT_TIMEOUT``, 60)."""
    return env_number("FLOCKLOG_RECEIPT_TIMEOUT", 60.0, minimum=MIN_RECEIPT_TIMEOUT)


def task_max_retries() -> int:
    """Database retries of one batch before it goes to the dead letters (``$FLOCKLOG_TASK_MAX_RETRIES``, 8)."""
    return int(env_number("FLOCKLOG_TASK_MAX_RETRIES", 8, integer=True))


def receipt_client(url: str) -> Any:
    """A Redis client for batch receipts on ``url``, or None: only a Redis broker carries receipts."""
    if not url.startswith(("redis://", "rediss://")):
        return None
    import redis

    timeout = broker_timeout()
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


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
        self._receipts = receipt_client(url)
        self.outstanding: dict[str, tuple[float, list[ExecutionRecord]]] = {}
        self._lock = threading.Lock()  # the sender thread and close() both look at the outstanding batches

    def send(self, records: Sequence[ExecutionRecord], batch_id: str | None = None) -> None:
        batch_id = batch_id or uuid.uuid4().hex
        try:
            self.app.send_task(
                TASK_NAME,
                args=[[r.to_wire() for r in records]],
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
            batch_ids = list(self.outstanding)
            try:
                pipe = self._receipts.pipeline(transaction=False)
                for batch_id in batch_ids:
                    pipe.exists(RECEIPT_PREFIX + batch_id)
                flags = pipe.execute()
            except Exception:  # broker unreachable: ask again later
                return []
            missing = []
            for batch_id, flag in zip(batch_ids, flags, strict=True):
                sent, records = self.outstanding[batch_id]
                if flag:
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

    def send(self, records: Sequence[ExecutionRecord]) -> None:
        if not self._ready:
            self.store.create_schema()
            self._ready = True
        self.store.write_batch(records)

    def close(self) -> None:
        self.store.close()


class SpoolTransport:
    """Durable batches on local disk: one JSON-lines file per batch, written to a temp name and renamed.

    File names sort in creation order (nanosecond time, pid, sequence), so replay keeps order. A replaying
    process claims a file by renaming it, so two replayers never send one batch twice.
    """

    name = "spool"

    def __init__(self, spool_dir: str | os.PathLike[str] | None = None) -> None:
        self.directory = resolve_spool_dir(spool_dir)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"spool directory {self.directory} cannot be created: {exc}") from exc
        self._seq = 0

    def send(self, records: Sequence[ExecutionRecord]) -> None:
        self._seq += 1
        stem = f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}"
        tmp = self.directory / f".{stem}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record.to_wire()) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.directory / f"{stem}.batch")

    def pending(self) -> list[Path]:
        return sorted(self.directory.glob("*.batch"))

    def backlog(self) -> tuple[int, int]:
        """(batch files, records) waiting in the spool."""
        files = self.pending()
        records = 0
        for path in files:
            try:
                with open(path, "rb") as handle:
                    records += sum(1 for _ in handle)
            except FileNotFoundError:
                continue
        return len(files), records

    def claim(self) -> Iterator[tuple[Path, list[ExecutionRecord]]]:
        """Yield claimed batches oldest first; the caller calls :meth:`done` or :meth:`release` for each."""
        for path in self.pending():
            claimed = path.with_suffix(f".claimed-{os.getpid()}")
            try:
                os.rename(path, claimed)
            except FileNotFoundError:
                continue  # another replayer took it
            try:
                records = [ExecutionRecord.from_wire(json.loads(line)) for line in claimed.read_text().splitlines()]
            except (ValueError, PipelineError) as exc:
                bad = claimed.with_suffix(".corrupt")
                os.rename(claimed, bad)
                os.write(2, f"flocklog: spool file {bad} is unreadable ({exc}); kept aside\n".encode())
                continue
            yield claimed, records

    @staticmethod
    def done(claimed: Path) -> None:
        claimed.unlink(missing_ok=True)

    @staticmethod
    def release(claimed: Path) -> None:
        name = claimed.name.rsplit(".claimed-", 1)[0] + ".batch"
        os.rename(claimed, claimed.with_name(name))

    def recover_orphans(self) -> None:
        """Batches claimed by a process that died mid-replay go back in line."""
        for path in self.directory.glob("*.claimed-*"):
            pid = int(path.name.rsplit("-", 1)[1])
            if pid != os.getpid() and not pid_alive(pid):
                self.release(path)

    def close(self) -> None:
        pass


TRANSPORTS = ("celery", "direct", "spool")


def transport_kind(kind: str | None) -> str:
    """The transport asked for, else ``$FLOCKLOG_TRANSPORT``, else celery; an unknown name is a ConfigError."""
    kind = kind or os.environ.get("FLOCKLOG_TRANSPORT") or "celery"
    if kind not in TRANSPORTS:
        raise ConfigError(f"unknown transport {kind!r}: use {', '.join(TRANSPORTS)}")
    return kind


def check_settings(kind: str | None) -> None:
    """Check now, in the caller, what the transport will read when the sender thread builds it later: a mistake
    there would otherwise surface only as a stream of spooled batches."""
    if transport_kind(kind) == "celery":
        for setting in (broker_timeout, visibility_timeout, default_receipt_timeout, task_max_retries):
            setting()


def make_transport(kind: str | None, **options: Any) -> Transport:
    kind = transport_kind(kind)
    if kind == "celery":
        return CeleryTransport(options.get("broker_url"), database_url=options.get("database_url"))
    if kind == "direct":
        return DirectTransport(options.get("database_url"), table=options.get("table"))
    return SpoolTransport(options.get("spool_dir"))  # transport_kind() let nothing else through


def replay_spool(spool: SpoolTransport, target: Transport, *, limit: int | None = None) -> int:
    """Send spooled batches to ``target`` oldest first; stop at the first failure. Returns records replayed."""
    spool.recover_orphans()
    sent = 0
    for count, (claimed, records) in enumerate(spool.claim()):
        try:
            target.send(records)
        except Exception:
            spool.release(claimed)
            raise
        spool.done(claimed)
        sent += len(records)
        if limit is not None and count + 1 >= limit:
            break
    return sent
