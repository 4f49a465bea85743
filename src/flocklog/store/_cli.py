"""``flocklog cleanup``: the retention command line, a thin shell over :func:`flocklog.store.cleanup.cleanup`."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from flocklog.store.cleanup import CleanupResult


def render(result: CleanupResult, *, as_json: bool = False) -> None:
    """Print what went (or would go, in a dry run) as a table, or as JSON for scripts."""
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    verb = "would delete" if result.dry_run else "deleted"
    title = f"flocklog cleanup of {result.table} ({result.dialect}{', DRY RUN' if result.dry_run else ''})"
    table = Table(title=title)
    table.add_column("method")
    table.add_column("matched", justify="right")
    table.add_column("deleted", justify="right")
    table.add_column("batches", justify="right")
    for method in result.methods:
        table.add_row(method.method, str(method.matched), str(method.deleted), str(method.batches))
    console = Console(file=sys.stdout, width=100)
    console.print(table)
    cutoff = result.cutoff.isoformat() if result.cutoff else "none"
    keep = "all" if result.keep is None else str(result.keep)
    console.print(
        f"{verb} {result.matched if result.dry_run else result.deleted} rows (cutoff {cutoff}, keep newest {keep}); "
        f"partitions {'to drop' if result.dry_run else 'dropped'}: {', '.join(result.partitions_dropped) or 'none'}; "
        f"{result.seconds:.2f}s",
        highlight=False,
    )


def register(group: click.Group) -> None:
    """Add ``cleanup`` to the ``flocklog`` command group."""

    @group.command("cleanup")
    @click.option("--days", type=click.FloatRange(min=0), default=None, help="Delete rows older than N days.")
    @click.option("--keep", type=click.IntRange(min=0), default=None, help="Keep only the newest N rows.")
    @click.option("--dry-run", is_flag=True, help="Count what would go; delete nothing.")
    @click.option(
        "--database",
        default=None,
        help="Store URL (default: $FLOCKLOG_DATABASE_URL, then sqlite:///.flocklog/flocklog.db).",
    )
    @click.option("--batch-size", type=click.IntRange(min=1), default=5000, show_default=True)
    @click.option(
        "--table", default=None, help="Table to clean (default: $FLOCKLOG_TABLE, then flocklog_execution_log)."
    )
    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    def cleanup_command(
        days: float | None,
        keep: int | None,
        dry_run: bool,
        database: str | None,
        batch_size: int,
        table: str | None,
        as_json: bool,
    ) -> None:
        """Delete old execution-log rows in short batches (drops whole daily partitions on PostgreSQL).

        With neither --days nor --keep, rows older than 365 days go. With both, a row goes if either says so.
        """
        from flocklog.errors import ConfigError, FlocklogError
        from flocklog.store import resolve_database_url
        from flocklog.store.cleanup import cleanup

        if days is None and keep is None:
            days = 365
        try:
            result = cleanup(
                resolve_database_url(database),
                days=days,
                keep=keep,
                dry_run=dry_run,
                batch_size=batch_size,
                table=table,
            )
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from exc
        except FlocklogError as exc:
            raise click.ClickException(str(exc)) from exc
        render(result, as_json=as_json)
