"""The ``flocklog`` command: assembles the subcommands each subpackage registers, plus verify/demo/status."""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any

import click

# Modules that add their own commands through ``register(group)``. They must import heavy optional
# dependencies (Celery, psycopg, Django) inside the commands, so ``flocklog --help`` works without extras.
_PLUGINS = ("flocklog.hub._cli", "flocklog.pipeline._cli", "flocklog.store._cli", "flocklog._demo")


class _Commands(click.Group):
    """Every command's deliberate errors (bad configuration, unreachable server) end as one ``Error:`` line and
    exit status 1; a traceback is kept for bugs, where it helps."""

    def invoke(self, ctx: click.Context) -> Any:
        from flocklog.errors import FlocklogError

        try:
            return super().invoke(ctx)
        except FlocklogError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="flocklog")
def main() -> None:
    """flocklog: many processes, one log, nothing lost."""


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--expect", "expect", type=int, default=None, help="Records each writer wrote (finds tail loss).")
@click.option("--writers", type=int, default=None, help="How many writers there were (finds silent writers).")
@click.option("--run", "run_id", default=None, help="Only check records of this run id.")
@click.option(
    "--when",
    default=None,
    help="Timed rotation's 'when' (S, M, H, D, MIDNIGHT, W0-W6): also check each file's time interval.",
)
@click.option("--interval", type=int, default=1, show_default=True)
@click.option("--utc", is_flag=True, help="Archive suffixes are UTC times.")
@click.option(
    "--expect-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help='JSON object {"writer": records written, ...}: finds each writer\'s missing tail.',
)
@click.option(
    "--ledger",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Directory of the writers' ledgers (flocklog.stamps --ledger): each writer's expected count.",
)
@click.option("--backup-count", type=int, default=None, help="The set's backupCount: what retention may remove.")
@click.option("--max-age", type=float, default=None, help="The set's max_age in seconds: what retention may remove.")
@click.option(
    "--max-bytes",
    type=int,
    default=None,
    help="The set's maxBytes: check size rotation against it (default: the median archive; 0: no size checks,"
    " e.g. for numbered archives that logrotate made by time).",
)
@click.option(
    "--allow-expired/--no-allow-expired",
    default=None,
    help="Accept any missing oldest prefix as expired / never. Default: only where --backup-count or --max-age"
    " explains it.",
)
@click.option("--allow-split", is_flag=True, help="Accept several archives for one interval (size-or-time).")
@click.option("--tolerance", type=float, default=0.0, show_default=True, help="Seconds of slack at boundaries.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(
    paths: tuple[str, ...],
    expect: int | None,
    writers: int | None,
    run_id: str | None,
    when: str | None,
    interval: int,
    utc: bool,
    expect_file: str | None,
    ledger: str | None,
    backup_count: int | None,
    max_age: float | None,
    max_bytes: int | None,
    allow_expired: bool | None,
    allow_split: bool,
    tolerance: float,
    as_json: bool,
) -> None:
    """Check a log set written by stamped writers for loss, duplication, torn lines and misfiled records.

    Each PATH is a log file (its rotated and .gz archives are included) or a directory. Exits 1 on any defect.
    Lines may be plain text ending with the stamp or JSON objects whose "message" ends with it.
    """
    from flocklog.verify import VerifyOptions, read_expect_file, render_report, verify_paths

    options = VerifyOptions(
        expected_counts=None if expect_file is None else read_expect_file(expect_file),
        ledger=ledger,
        backup_count=backup_count,
        max_age=max_age,
        max_bytes=max_bytes,
        expect_per_writer=expect,
        writers=writers,
        run=run_id,
        when=when,
        interval=interval,
        utc=utc,
        allow_expired=allow_expired,
        allow_split=allow_split,
        tolerance=tolerance,
    )
    report = verify_paths(list(paths), options)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        render_report(report)
    sys.exit(0 if report.ok else 1)


@main.command()
@click.argument("address", required=False)
@click.option("--secret", envvar="FLOCKLOG_HUB_SECRET", default=None, help="Shared secret of a TCP hub.")
@click.option("--timeout", type=float, default=3.0, show_default=True)
@click.option("--broker", envvar="FLOCKLOG_BROKER_URL", default=None, help="Pipeline broker URL.")
@click.option("--database", envvar="FLOCKLOG_DATABASE_URL", default=None, help="Pipeline store URL.")
@click.option("--spool", envvar="FLOCKLOG_SPOOL_DIR", default=None, help="Pipeline spool directory.")
@click.option("--json", "as_json", is_flag=True)
def status(
    address: str | None,
    secret: str | None,
    timeout: float,
    broker: str | None,
    database: str | None,
    spool: str | None,
    as_json: bool,
) -> None:
    """Show a hub's counters (with ADDRESS) or the pipeline's queue, spool and table (without)."""
    data: dict[str, Any]
    if address:
        from flocklog.hub.status import query_status

        data = query_status(address, secret=secret, timeout=timeout)
    else:
        from flocklog.pipeline.status import collect_status

        data = collect_status(broker_url=broker, database_url=database, spool_dir=spool)
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="flocklog status", show_header=True)
    table.add_column("key")
    table.add_column("value")
    for key, value in data.items():
        table.add_row(str(key), "-" if value is None else str(value))
    Console().print(table)


def _register_plugins() -> None:
    for name in _PLUGINS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # A subpackage that is not there yet, or whose optional extra is missing, must not break the CLI.
            if os.environ.get("FLOCKLOG_DEBUG"):
                click.echo(f"flocklog: skipping {name}: {exc}", err=True)
            continue
        module.register(main)


_register_plugins()

if __name__ == "__main__":  # pragma: no cover
    main()
