"""``flocklog status`` for the pipeline: what is queued on the broker, waiting in the spool, and in the table; and
what the workers' spool adopters on this host did (``adopter_*``)."""

from __future__ import annotations

from typing import Any

from flocklog.errors import ConfigError
from flocklog.pipeline.transports import QUEUE, SpoolTransport, receipt_client


def _queue_length(broker_url: str) -> int | str:
    client = receipt_client(broker_url)  # the same bounded Redis client the producers use
    if client is not None:
        try:
            return int(client.llen(QUEUE))
        finally:
            client.close()
    if broker_url.startswith("filesystem://"):
        from pathlib import Path

        from flocklog.pipeline.celery_app import broker_options

        return len(list(Path(broker_options(broker_url, create=False)["data_folder_in"]).glob("*.msg")))
    return "n/a for this broker"


def collect_status(
    *, broker_url: str | None = None, database_url: str | None = None, spool_dir: str | None = None
) -> dict[str, Any]:
    """One dict, each part reported independently: an unreachable broker does not hide the table's rows."""
    from flocklog.pipeline.celery_app import resolve_broker_url
    from flocklog.store import open_store, resolve_database_url

    broker = resolve_broker_url(broker_url)
    database = resolve_database_url(database_url)
    data: dict[str, Any] = {"broker": broker, "database": database}
    try:
        data["queue_length"] = _queue_length(broker)
    except ConfigError:
        raise  # a wrong setting is the user's to fix, not a state of the broker to report
    except Exception as exc:
        data["queue_length"] = f"unreachable: {exc}"
    spool = SpoolTransport(spool_dir)
    data["spool_dir"] = str(spool.directory)
    data["spool_batches"], data["spool_records"] = spool.backlog()
    from flocklog.pipeline._adopter import adopter_status

    data.update(adopter_status(spool.directory.resolve()))
    store = open_store(database)
    try:
        data["table"] = store.table
        data["rows"] = store.count()
        oldest = store.oldest()
        data["oldest_row"] = oldest.isoformat() if oldest else None
        data["last_cleanup"] = store.last_cleanup()
    except Exception as exc:
        data["rows"] = f"unavailable: {exc}"
    finally:
        store.close()
    return data
