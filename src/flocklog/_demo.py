"""``flocklog demo``: the problem and the fix side by side on this machine, with no server and no setup.

Several processes write one log set through the stdlib's rotating handlers and through flocklog's, with rotation
several times a second; each set is then checked by :mod:`flocklog.verify`. If the pipeline extra is installed,
the execution-log pipeline runs on its embedded defaults too.
"""

from __future__ import annotations

import functools
import shutil
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from flocklog._benchmark_harness import KINDS, Result, Workload, run_workload
from flocklog.verify import Report, VerifyOptions, verify_paths

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

DEMO_KINDS = ("stdlib-size", "stdlib-timed", "flocklog-size", "flocklog-timed")


def verify_workload(work: Workload, result: Result, run: str) -> Report:
    """Check a workload's set against exactly what each writer said it wrote."""
    timed = KINDS[work.kind].rotation == "time"
    options = VerifyOptions(
        expected_counts=result.per_writer,
        writers=work.processes,
        run=run,
        when=work.when if timed else None,
        allow_expired=False,  # backup counts are sized so that retention removes nothing: a gap is a loss
    )
    return verify_paths([str(work.log_path)], options)


def _advance(progress: Progress, task: TaskID, elapsed: float) -> None:
    progress.update(task, completed=elapsed)


def _files_part(directory: Path, processes: int, seconds: float, max_bytes: int) -> tuple[list[dict[str, Any]], bool]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    rows: list[dict[str, Any]] = []
    flocklog_clean = True
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), transient=True) as progress:
        for kind in DEMO_KINDS:
            task = progress.add_task(f"{KINDS[kind].label}: {processes} processes writing", total=seconds)
            work = Workload(
                kind=kind,
                directory=directory / kind,
                processes=processes,
                duration=seconds,
                max_bytes=max_bytes,
                backup_count=5000,
                when="S",
            )
            run = uuid.uuid4().hex[:10]
            result = run_workload(work, run, on_tick=functools.partial(_advance, progress, task))
            progress.update(task, completed=seconds, description=f"{KINDS[kind].label}: verifying")
            report = verify_workload(work, result, run)
            progress.remove_task(task)
            defects = report.lost + report.duplicated + report.torn + report.interval_violations
            if kind.startswith("flocklog") and (not report.ok or result.errors):
                flocklog_clean = False
            rows.append(
                {
                    "handler": KINDS[kind].label,
                    "records": result.records,
                    "records_per_s": result.records_per_second,
                    "lost": report.lost,
                    "duplicated": report.duplicated,
                    "torn": report.torn,
                    "misfiled": report.interval_violations + report.split_intervals,
                    "archives": report.archives,
                    "handler_errors": result.handler_errors,
                    "ok": report.ok and not result.errors,
                    "defects": defects,
                    "errors": result.errors,
                }
            )
    return rows, flocklog_clean


def _print_files_table(rows: list[dict[str, Any]], processes: int, seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{processes} processes x {seconds:g} s, one log set per handler, rotating several times a second"
    )
    for column in (
        "handler",
        "records",
        "records/s",
        "lost",
        "duplicated",
        "torn",
        "misfiled",
        "archives",
        "errors",
        "verdict",
    ):
        table.add_column(column, justify="left" if column == "handler" else "right")
    for row in rows:
        table.add_row(
            row["handler"],
            f"{row['records']:,}",
            f"{row['records_per_s']:,.0f}",
            str(row["lost"]),
            str(row["duplicated"]),
            str(row["torn"]),
            str(row["misfiled"]),
            str(row["archives"]),
            str(row["handler_errors"]),
            "[green]clean[/green]" if row["ok"] else "[red]defects[/red]",
        )
    console = Console()
    console.print(table)
    for row in rows:
        for error in row["errors"]:
            console.print(f"[red]{row['handler']}: {error}[/red]")


def _pipeline_part(directory: Path, processes: int, records: int) -> dict[str, Any] | None:
    try:
        from flocklog.pipeline.demo import run_pipeline_demo
    except ImportError as exc:
        click.echo(f"(pipeline part skipped: {exc}; install with: pip install 'flocklog[celery]')")
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), transient=True) as progress:
        task = progress.add_task("execution-log pipeline (embedded broker + SQLite)", total=processes * records)
        summary = run_pipeline_demo(
            directory / "pipeline",
            producers=processes,
            records=records,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    from rich.console import Console
    from rich.table import Table

    table = Table(title="execution-log pipeline, embedded defaults (no server)")
    table.add_column("key")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(str(key), f"{value:,.1f}" if isinstance(value, float) else str(value))
    Console().print(table)
    return summary


@click.command()
@click.option("--processes", "-n", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--seconds", type=click.FloatRange(0.5, 120), default=3.0, show_default=True)
@click.option("--max-bytes", type=click.IntRange(4096), default=256 * 1024, show_default=True)
@click.option(
    "--records", type=click.IntRange(1), default=1000, show_default=True, help="Pipeline records per producer."
)
@click.option("--part", type=click.Choice(["all", "files", "pipeline"]), default="all", show_default=True)
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=Path("flocklog-demo"))
@click.option("--keep/--no-keep", default=True, show_default=True, help="Keep the log sets for a look afterwards.")
def demo(processes: int, seconds: float, max_bytes: int, records: int, part: str, directory: Path, keep: bool) -> None:
    """Show stdlib's rotating handlers losing records across processes, and flocklog's losing none."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    ok = True
    if part in ("all", "files"):
        rows, ok = _files_part(directory, processes, seconds, max_bytes)
        _print_files_table(rows, processes, seconds)
        click.echo(f"log sets are in {directory}/ (check one again: flocklog verify {directory}/flocklog-size/app.log)")
    if part in ("all", "pipeline"):
        summary = _pipeline_part(directory, processes, records)
        if summary is not None and summary.get("rows") != summary.get("records_sent"):
            ok = False
    if not keep:
        shutil.rmtree(directory, ignore_errors=True)
    sys.exit(0 if ok else 1)


def register(group: click.Group) -> None:
    group.add_command(demo)
