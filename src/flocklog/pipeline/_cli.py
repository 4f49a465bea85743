"""Pipeline commands: ``flocklog worker``, ``flocklog db init``, ``flocklog spool replay``."""

from __future__ import annotations

import os
import sys

import click


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--broker", envvar="FLOCKLOG_BROKER_URL", default=None, help="Broker URL (default: embedded).")
@click.option("--database", envvar="FLOCKLOG_DATABASE_URL", default=None, help="Store URL (default: SQLite).")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(broker: str | None, database: str | None, celery_args: tuple[str, ...]) -> None:
    """Run the batch-writing Celery worker on queue 'logs' (extra arguments go to 'celery worker').

    Same as: celery -A flocklog.pipeline.celery_app worker -Q logs. Watch it with Flower (start the worker
    with -E so that its tasks show): celery -A flocklog.pipeline.celery_app flower
    """
    if broker:
        os.environ["FLOCKLOG_BROKER_URL"] = broker
    if database:
        os.environ["FLOCKLOG_DATABASE_URL"] = database
    # Importing the app module builds the app (celery -A imports the same module): a bad setting fails here, as
    # one clear line, rather than as a traceback from inside celery after the exec.
    import flocklog.pipeline.celery_app  # noqa: F401
    from flocklog.pipeline.transports import worker_command

    args = worker_command(*celery_args)
    os.execv(sys.executable, args)


@click.group()
def db() -> None:
    """The execution-log table."""


@db.command("init")
@click.option("--database", envvar="FLOCKLOG_DATABASE_URL", default=None)
@click.option("--table", envvar="FLOCKLOG_TABLE", default=None)
@click.option("--partitioned", is_flag=True, help="PostgreSQL: partition by day (retention drops whole days).")
def db_init(database: str | None, table: str | None, partitioned: bool) -> None:
    """Create the table, its index and the bookkeeping table (idempotent)."""
    from flocklog.store import open_store

    store = open_store(database, table=table)
    try:
        store.create_schema(partitioned=partitioned)
    finally:
        store.close()
    click.echo(f"schema ready: {store.table} on {store.dialect}{' (partitioned by day)' if partitioned else ''}")


@click.group()
def spool() -> None:
    """The local spool of batches that could not be sent."""


@spool.command("replay")
@click.option("--spool-dir", envvar="FLOCKLOG_SPOOL_DIR", default=None)
@click.option("--to", "target", type=click.Choice(["celery", "direct"]), default="celery", show_default=True)
@click.option("--broker", envvar="FLOCKLOG_BROKER_URL", default=None)
@click.option("--database", envvar="FLOCKLOG_DATABASE_URL", default=None)
def spool_replay(spool_dir: str | None, target: str, broker: str | None, database: str | None) -> None:
    """Send every spooled batch, oldest first, to the broker (or straight to the database)."""
    from flocklog.pipeline.transports import SpoolTransport, make_transport, replay_spool

    source = SpoolTransport(spool_dir)
    transport = make_transport(target, broker_url=broker, database_url=database)
    try:
        sent = replay_spool(source, transport)
    except Exception as exc:
        batches, records = source.backlog()
        raise click.ClickException(
            f"replay stopped: {exc} ({batches} batches, {records} records still spooled)"
        ) from exc
    finally:
        transport.close()
    click.echo(f"replayed {sent} records from {source.directory}")


def register(group: click.Group) -> None:
    group.add_command(worker)
    group.add_command(db)
    group.add_command(spool)
