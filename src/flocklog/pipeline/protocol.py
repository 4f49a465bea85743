"""What the producer and the worker agree on: the task's name and queue, the receipt keys, the worker's command.

A module of its own so that both sides import it without importing each other (``transports`` builds the Celery
app lazily from ``celery_app``; ``celery_app`` needs only these names, the settings, the spool and the record).

Receipts: once a batch is settled (committed, or its bad records dead-lettered), the worker sets
``RECEIPT_PREFIX + batch_id`` in the broker's Redis (any value, a TTL of a day). The producer reads them to drop
confirmed batches from memory, to resend the others after ``FLOCKLOG_RECEIPT_TIMEOUT``, and on spool replay to
delete spooled batches that were delivered after all. A batch id is 32 hex digits; a resend keeps its id.

The batch itself (the task's first argument) is one JSON text, ``{"v": 2, "packed": "<base64>"}``: the rows
``[[id, ts, level, logger, message, fields, host, pid], ...]`` packed with msgpack (:func:`encode_batch` /
:func:`load_batch`). kombu's JSON (whose object hook runs in Python for every object) sees one string instead of
2,000 objects, and that string has nothing to escape. Profiled at 1000-record batches, rows as a list of dicts
cost the producer ~5 us and the worker ~8 us per record in serialisation alone; rows as one JSON text (format 1)
~2 us and ~4 us; packed, the producer's part is ~0.9 us, and it holds the GIL the app needs for a shorter spell.
A batch msgpack cannot carry (an integer beyond 64 bits, a lone surrogate from an older spool) goes as format 1,
``{"v": 1, "rows": [...]}``, which the worker reads as well, and so it does a list of ``to_wire()`` dicts
(producers of an older version, tasks sent by hand). A batch whose rows are all exactly what encode_batch writes
(:func:`plain_rows`) goes to PostgreSQL as those rows, without records. Upgrade the workers before the producers,
or set ``FLOCKLOG_BATCH_FORMAT=1`` on the producers until every worker is upgraded: a worker of an older version
reads only format 1, and keeps a packed batch's text aside as refused (``*.refused``), where no replay reads it.
"""

from __future__ import annotations

import binascii
import json
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import msgpack

from flocklog._pipelinesettings import broker_timeout
from flocklog.record import WIRE_KEYS, WIRE_TYPES, ExecutionRecord, uuid_from_text
from flocklog.store import WIRE_TS_RANGE

__all__ = [
    "BATCH_FORMAT",
    "CELERY_APP",
    "QUEUE",
    "RECEIPT_PREFIX",
    "RECEIPT_TTL",
    "TASK_NAME",
    "decode_batch",
    "decode_rows",
    "encode_batch",
    "load_batch",
    "packed_text",
    "plain_rows",
    "receipt_client",
    "task_argument",
    "worker_command",
]

TASK_NAME = "flocklog.write_batch"
QUEUE = "logs"
RECEIPT_PREFIX = "flocklog:receipt:"
RECEIPT_TTL = 86400  # seconds: a spool older than this is resent on replay (harmless: the store ignores rows it has)
CELERY_APP = "flocklog.pipeline.celery_app"
#: The version of the batch text :func:`encode_batch` writes; a worker reads this one and format 1, and keeps a
#: batch of any other aside.
BATCH_FORMAT = 2
_FORMATS = (1, 2)
# ASCII-escaped: a record from an old spool may hold a lone surrogate, which then reaches the worker (and the store
# refuses just that one) instead of failing the send over and over.
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
_UTC = timezone.utc
_fromtimestamp = datetime.fromtimestamp


def encode_batch(records: Sequence[ExecutionRecord], *, version: int = BATCH_FORMAT) -> str:
    """One JSON text for a batch (see the module docstring): what the Celery task carries. Format 2 unless msgpack
    cannot carry a value, or ``version=1`` asks for the older text."""
    rows = [[r.id.hex, r.ts.timestamp(), r.level, r.logger, r.message, r.fields, r.host, r.pid] for r in records]
    if version != 1:
        try:
            return packed_text(rows)
        except (TypeError, ValueError, OverflowError):  # UnicodeEncodeError is a ValueError
            pass
    return _encode({"v": 1, "rows": rows})


def packed_text(rows: Sequence[Any]) -> str:
    """The format-2 text of ``rows``; raises what msgpack raises for a value it cannot carry."""
    packed = msgpack.packb(rows, use_bin_type=True)
    return _encode({"v": 2, "packed": binascii.b2a_base64(packed, newline=False).decode("ascii")})


def task_argument(records: Sequence[ExecutionRecord], version: int = BATCH_FORMAT) -> str | list[dict[str, Any]]:
    """The task's batch argument: :func:`encode_batch`, or the older list of ``to_wire()`` dicts for a batch it
    cannot encode.

    Only a record that skipped ``ExecutionRecord.build`` (built directly, or read back from an older version's
    spool) can hold what the strict encoder refuses (NaN, a ``datetime`` or ``Decimal`` field). Such a batch must
    not fail its send over and over as if the broker were down, with every later spooled batch stuck behind it:
    kombu's JSON carries it as before, and the worker stores its good records and keeps the bad one aside.
    """
    try:
        return encode_batch(records, version=version)
    except (TypeError, ValueError, OverflowError, RecursionError):
        return [record.to_wire() for record in records]


def load_batch(payload: str) -> tuple[list[Any] | None, str]:
    """The rows of an :func:`encode_batch` text (either format), or None and why the text is not such a batch."""
    try:
        data = json.loads(payload)
        version = data.get("v") if isinstance(data, dict) else None
        if version == 2 and isinstance(data.get("packed"), str):
            rows = _unpack(binascii.a2b_base64(data["packed"]))
        elif version == 1:
            rows = data.get("rows")
        else:
            raise ValueError(f"not a flocklog batch of format {' or '.join(map(str, _FORMATS))} (format {version!r})")
        if not isinstance(rows, list):
            raise ValueError(f"a format-{version} batch without a list of rows")
    except (ValueError, TypeError, RecursionError, msgpack.UnpackException) as exc:  # binascii.Error: a ValueError
        return None, f"the task's batch cannot be read: {exc}"
    return rows, ""


def _unpack(packed: bytes) -> Any:
    """msgpack's rows; a map key that is not text (a record built without ``build`` may carry ``{1: ...}``) becomes
    the text JSON would have made of it (``"1"``, ``"true"``, ``"null"``), as format 1 stored it. Only then are
    the maps built by a hook, from text keys: msgpack's strict default stays the fast path, and a hostile batch of
    colliding integer keys never reaches a dict."""
    try:
        return msgpack.unpackb(packed, raw=False)
    except ValueError as strict:
        try:
            return msgpack.unpackb(packed, raw=False, strict_map_key=False, object_pairs_hook=_text_keys)
        except (ValueError, TypeError):
            raise strict from None


def _text_keys(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    return {key if type(key) is str else _encode(key): value for key, value in pairs}


def plain_rows(rows: list[Any]) -> bool:
    """Is every row exactly what :func:`encode_batch` writes (the types :func:`decode_rows` takes its short path
    for, an id in text, a time a ``datetime`` holds)? Then the store may take the rows as they are
    (``write_wire_rows``) instead of records."""
    low, high = WIRE_TS_RANGE
    for row in rows:
        if type(row) is not list or tuple(map(type, row)) != WIRE_TYPES or not low <= row[1] < high:
            return False
    return True


def decode_rows(rows: list[Any]) -> tuple[list[ExecutionRecord], list[tuple[Any, str]]]:
    """The records of a batch's rows (:func:`load_batch`), and each row that is not a record (kept, with the
    reason): one malformed row must not sink the batch."""
    valid: list[ExecutionRecord] = []
    malformed: list[tuple[Any, str]] = []
    build = ExecutionRecord
    for row in rows:
        try:
            id_, ts, level, logger, message, fields, host, pid = row
            if tuple(map(type, row)) != WIRE_TYPES:  # not what encode_batch writes: the careful path decides
                valid.append(build.from_wire(dict(zip(WIRE_KEYS, row, strict=True))))
                continue
            when = _fromtimestamp(ts, _UTC)
            valid.append(build(level, message, logger, fields, uuid_from_text(id_), when, host, pid))
        except Exception as exc:  # a row of the wrong length, a bad id or time
            malformed.append((row, f"not an execution-log record: {exc}"))
    return valid, malformed


def decode_batch(payload: str) -> tuple[list[ExecutionRecord], list[tuple[Any, str]]]:
    """The records of an :func:`encode_batch` text, and each row that is not a record (kept, with the reason):
    one malformed row must not sink the batch. A text that is not such a batch at all is one malformed item."""
    rows, why = load_batch(payload)
    if rows is None:
        return [], [(payload, why)]
    return decode_rows(rows)


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
