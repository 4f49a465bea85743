"""Where execution-log records end up: PostgreSQL (production) or SQLite (the embedded default).

Both stores insert idempotently on the producer-made key ``(id, ts)``, so a batch delivered twice (a Celery retry,
a Redis visibility-timeout redelivery, a spool replay) adds no duplicate row. Each dialect's SQL lives in one
module (``_postgres.py``, ``_sqlite.py``), which also holds that dialect's retention queries and its one
identifier-quoting helper.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from flocklog.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from flocklog.record import ExecutionRecord

DEFAULT_TABLE = "flocklog_execution_log"
DEFAULT_DATABASE_URL = "sqlite:///.flocklog/flocklog.db"
#: The float seconds a wire row's ``ts`` may hold for ``write_wire_rows``: 1970 up to the last second of 9999,
#: where ``datetime.fromtimestamp`` (and its rounding to the microsecond) is defined everywhere.
WIRE_TS_RANGE = (0.0, 253402300799.0)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,50}$")


class RecordRefused(StoreError):
    """The database refused the rows themselves (a NUL byte, a lone surrogate, a value out of range).

    Unlike a plain :class:`StoreError` (unreachable, timed out, disk full), retrying the same rows cannot help:
    the batch is split so the good rows are stored and only the refused record is dead-lettered.
    """


class Store(Protocol):
    """The contract every store keeps.

    - ``write_batch`` inserts with ``ON CONFLICT (id, ts) DO NOTHING`` in ONE transaction and returns the rows
      really added; it raises :class:`RecordRefused` when the data is refused (retrying cannot help) and
      :class:`StoreError` for everything else (retrying later may help). Nothing else escapes it.
    - ``write_wire_rows(rows)`` may take a batch as the Celery task's rows, ``[id hex, ts seconds (a float in
      :data:`WIRE_TS_RANGE`), level, logger, message, fields dict, host, pid]``, and store exactly what
      ``write_batch`` would store for the records made of them, or store nothing and return None: then the caller
      builds the records and calls ``write_batch``. A store without such a shortcut always returns None. It raises
      only :class:`StoreError`, and only where ``write_batch`` would fail too (the database is unreachable).
    - connections open lazily and belong to the process that opened them (a forked child opens its own).
    - ``create_schema`` is idempotent and doubles as the start-up check that the database is usable.
    - ``last_cleanup`` is the summary the last retention run recorded (None if never), for ``flocklog status``.
    """

    url: str
    dialect: str
    table: str

    def create_schema(self, partitioned: bool = False) -> None: ...
    def write_batch(self, records: Sequence[ExecutionRecord]) -> int: ...
    def write_wire_rows(self, rows: Sequence[Sequence[Any]]) -> int | None: ...
    def count(self) -> int: ...
    def oldest(self) -> datetime | None: ...
    def last_cleanup(self) -> Any: ...
    def close(self) -> None: ...


def resolve_database_url(url: str | None = None) -> str:
    """The explicit URL, else ``FLOCKLOG_DATABASE_URL``, else the embedded SQLite file under ``.flocklog/``."""
    return url or os.environ.get("FLOCKLOG_DATABASE_URL") or DEFAULT_DATABASE_URL


def resolve_table(table: str | None = None) -> str:
    name = table or os.environ.get("FLOCKLOG_TABLE") or DEFAULT_TABLE
    if not _IDENT.match(name):
        raise ConfigError(f"table name {name!r} must be a plain SQL identifier (letters, digits, _; <= 50 chars)")
    return name


def sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` URL (``sqlite://`` is in memory)."""
    return url[len("sqlite:///") :] if url.startswith("sqlite:///") else ":memory:"


def redact(url: str) -> str:
    """``url`` without its password, for messages."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def open_store(url: str | None = None, *, table: str | None = None) -> Store:
    """A store for ``url`` (``postgresql://...`` or ``sqlite:///path``); connections open lazily, per process."""
    resolved = resolve_database_url(url)
    name = resolve_table(table)
    if resolved.startswith(("postgresql://", "postgres://")):
        from flocklog.store._postgres import PostgresStore

        return PostgresStore(resolved, name)
    if resolved.startswith("sqlite://"):
        from flocklog.store._sqlite import SqliteStore

        return SqliteStore(resolved, name)
    raise ConfigError(f"unsupported database URL {resolved!r}: use postgresql://... or sqlite:///path/to/file.db")


@dataclass
class WriteOutcome:
    """What :func:`write_isolated` did: rows added, and each refused record with the database's reason."""

    written: int = 0
    refused: list[tuple[ExecutionRecord, str]] = field(default_factory=list)


def write_isolated(store: Store, records: Sequence[ExecutionRecord]) -> WriteOutcome:
    """Write ``records``; if the database refuses the batch, split it until each refused record stands alone.

    One poison record then costs about ``2 * log2(len(records))`` extra round trips, and its neighbours are
    stored. A :class:`StoreError` that is not a refusal (the database went away) propagates: the caller retries
    the whole batch later, which the idempotent insert makes harmless for the halves already written.
    """
    outcome = WriteOutcome()
    pending: list[Sequence[ExecutionRecord]] = [records]
    while pending:
        part = pending.pop()
        if not part:
            continue
        try:
            outcome.written += store.write_batch(part)
        except RecordRefused as exc:
            if len(part) == 1:
                outcome.refused.append((part[0], str(exc)))
                continue
            middle = len(part) // 2
            pending += [part[middle:], part[:middle]]
    return outcome


__all__ = [
    "DEFAULT_DATABASE_URL",
    "DEFAULT_TABLE",
    "WIRE_TS_RANGE",
    "RecordRefused",
    "Store",
    "WriteOutcome",
    "open_store",
    "redact",
    "resolve_database_url",
    "resolve_table",
    "sqlite_path",
    "write_isolated",
]
