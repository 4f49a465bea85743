"""Pipeline commands: ``flocklog worker``, ``flocklog db init``, ``flocklog spool replay``."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from flocklog.pipeline.transports import SpoolTransport


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--broker", envvar="FLOCKLOG_BROKER_URL", default=None, help="Broker URL (default: embedded).")
@click.option("--database", envvar="FLOCKLOG_DATABASE_URL", default=None, help="Store URL (default: SQLite).")
@click.option("--spool-dir", envvar="FLOCKLOG_SPOOL_DIR", default=None, help="The producers' spool on this host.")
@click.option(
    "--adopt-spools/--no-adopt-spools",
    default=True,
    show_default=True,
    help="Replay spool files of exited producers every few seconds (env FLOCKLOG_ADOPT_SPOOLS=0: off).",
)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(
    broker: str | None,
    database: str | None,
    spool_dir: str | None,
    adopt_spools: bool,
    celery_args: tuple[str, ...],
) -> None:
    """Run the batch-writing Celery worker on queue 'logs' (extra arguments go to 'celery worker').

    Same as: celery -A flocklog.pipeline.celery_app worker -Q logs. Watch it with Flower (start the worker
    with -E so that its tasks show): celery -A flocklog.pipeline.celery_app flower. The worker refuses to start
    when its database cannot be reached or its table cannot be created. Its main process replays the spool
    files of producers that exited (same host, same spool directory), so nothing waits for a manual replay.
    """
    if broker:
        os.environ["FLOCKLOG_BROKER_URL"] = broker
    if database:
        os.environ["FLOCKLOG_DATABASE_URL"] = database
    if spool_dir:
        os.environ["FLOCKLOG_SPOOL_DIR"] = spool_dir
    if not adopt_spools:
        os.environ["FLOCKLOG_ADOPT_SPOOLS"] = "0"
    # Build the app here (celery -A builds the same one after the exec): a bad setting, or a database the worker
    # could never write to, fails now as one clear line rather than as a traceback from inside celery.
    from flocklog.pipeline.celery_app import database_problem, get_app
    from flocklog.pipeline.transports import worker_command

    app = get_app()
    problem = database_problem(app.conf.flocklog_database_url, app.conf.flocklog_table)
    if problem is not None:
        raise click.ClickException(f"refusing to start the worker: {problem}")
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
    """The local spool of batches that could not be sent (also: the worker's dead-letter directory)."""


@spool.command("replay")
@click.option("--spool-dir", envvar="FLOCKLOG_SPOOL_DIR", default=None)
@click.option("--to", "target", type=click.Choice(["celery", "direct"]), default="celery", show_default=True)
@click.option("--broker", envvar="FLOCKLOG_BROKER_URL", default=None)
@click.option("--database", envvar="FLOCKLOG_DATABASE_URL", default=None)
@click.option("--table", envvar="FLOCKLOG_TABLE", default=None)
def spool_replay(
    spool_dir: str | None, target: str, broker: str | None, database: str | None, table: str | None
) -> None:
    """Send every spooled batch, oldest first, to the broker (or straight to the database).

    To celery: the batches are handed to the broker, and the worker stores them (a record the database refuses
    is split out and kept in the worker's dead-letter directory). Direct: each batch is written here, a refused
    record is split out into the dead-letter directory and the replay goes on with the next file.
    """
    from flocklog.pipeline.transports import SpoolTransport, make_transport, replay_spool

    source = SpoolTransport(spool_dir)
    if target == "direct":
        _replay_direct(source, database, table)
        return
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
    click.echo(f"handed {sent} records from {source.directory} to the broker; the worker stores them")


def _replay_direct(source: SpoolTransport, database: str | None, table: str | None) -> None:
    """Write each spool file into the store, isolating refused records, so one poison file blocks nothing."""
    from flocklog.errors import StoreError
    from flocklog.pipeline.deadletter import dead_letter_dir, park_refused
    from flocklog.store import open_store, write_isolated

    store = open_store(database, table=table)
    written = refused = files = 0
    try:
        store.create_schema()
        source.recover_orphans()
        for claimed, records in source.claim():
            try:
                outcome = write_isolated(store, records)
                park_refused(outcome.refused)
            except (StoreError, OSError) as exc:
                source.release(claimed)
                batches, left = source.backlog()
                raise click.ClickException(
                    f"replay stopped: {exc} ({batches} batches, {left} records still spooled; "
                    f"{written} rows written before)"
                ) from exc
            source.done(claimed)
            files += 1
            written += outcome.written
            refused += len(outcome.refused)
    finally:
        store.close()
    message = f"replayed {files} spool files from {source.directory}: {written} rows written"
    if refused:
        message += f", {refused} refused records kept in {dead_letter_dir()} (*.refused)"
    click.echo(message)


def register(group: click.Group) -> None:
    group.add_command(worker)
    group.add_command(db)
    group.add_command(spool)
