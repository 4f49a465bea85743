"""Where execution-log records end up: PostgreSQL (production) or SQLite (the embedded default).

Both stores insert idempotently on the producer-made key ``(id, ts)``, so a batch delivered twice (a Celery retry,
a Redis visibility-timeout redelivery, a spool replay) adds no duplicate row.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from flocklog.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from flocklog.record import ExecutionRecord

DEFAULT_TABLE = "flocklog_execution_log"
DEFAULT_DATABASE_URL = "sqlite:///.flocklog/flocklog.db"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,50}$")


class Store(Protocol):
    url: str
    dialect: str
    table: str

    def create_schema(self, partitioned: bool = False) -> None: ...
    def write_batch(self, records: Sequence[ExecutionRecord]) -> int: ...
    def count(self) -> int: ...
    def oldest(self) -> datetime | None: ...
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


__all__ = [
    "DEFAULT_DATABASE_URL",
    "DEFAULT_TABLE",
    "Store",
    "open_store",
    "resolve_database_url",
    "resolve_table",
    "sqlite_path",
]
