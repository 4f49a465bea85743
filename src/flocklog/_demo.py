"""``flocklog demo``: the problem and the fix side by side on this machine, with no server and no setup.

Several processes write one log set through the stdlib's rotating handlers and through flocklog's, with rotation
several times a second; each set is then checked by :mod:`flocklog.verify` against the writers' ledgers. If the
pipeline extra is installed, the execution-log pipeline runs on its embedded defaults too. The output fits an
80-column terminal; ``--json`` gives the same numbers to machines. The demo only ever deletes what it made: its
directory carries a marker file, and a directory without one that is not empty is refused.
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from flocklog._benchmark_harness import KINDS, Result, Workload, run_workload
from flocklog.verify import Report, VerifyOptions, verify_paths

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

DEMO_KINDS = ("stdlib-size", "stdlib-timed", "flocklog-size", "flocklog-timed")
# Short names that fit an 80-column table; the legend under it gives the class names.
SHORT_NAMES = {
    "stdlib-size": "stdlib size",
    "stdlib-timed": "stdlib timed",
    "flocklog-size": "flocklog size",
    "flocklog-timed": "flocklog timed",
}
MARKER = ".flocklog-demo"  # says "an earlier demo made this directory": the demo may empty it again
BACKUP_COUNT = 5000  # sized so retention removes nothing in a demo run: any missing record is a loss
EXAMPLES = ("gunicorn_app", "django_celery", "uvicorn_app", "fastapi_pipeline")  # under examples/, each with a README


class DemoDirError(click.ClickException):
    """The ``--dir`` holds files the demo did not make: refusing beats deleting someone's data."""


def prepare_directory(directory: Path) -> None:
    """Make ``directory`` ready for a run, deleting only what an earlier demo made there.

    A new or empty directory is used as is; one with the marker file has the demo's own entries removed (any
    other file in it stays); anything else is refused with one error line.
    """
    if directory.exists() and not directory.is_dir():
        raise DemoDirError(f"--dir {directory} is a file, not a directory; choose a new or empty directory")
    if directory.is_dir() and any(directory.iterdir()):
        if not (directory / MARKER).is_file():
            raise DemoDirError(
                f"--dir {directory} is not empty and was not made by flocklog demo (no {MARKER} marker);"
                " choose a new or empty directory"
            )
        for name in (*DEMO_KINDS, "pipeline"):
            shutil.rmtree(directory / name, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("made by flocklog demo; the demo may empty this directory again\n")


def remove_directory(directory: Path) -> None:
    """``--no-keep``: remove the demo's own entries, and the directory if nothing else is left in it."""
    for name in (*DEMO_KINDS, "pipeline", MARKER):
        path = directory / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()
    if directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()


def _workload(directory: Path, kind: str, processes: int, seconds: float, max_bytes: int) -> Workload:
    return Workload(
        kind=kind,
        directory=directory / kind,
        processes=processes,
        duration=seconds,
        max_bytes=max_bytes,
        backup_count=BACKUP_COUNT,
        when="S",
        ledger=directory / kind / "ledger",
    )


def verify_command(work: Workload) -> str:
    """The exact ``flocklog verify`` command that re-checks one set the way the demo checked it."""
    timed = KINDS[work.kind].rotation == "time"
    rotation = f"--when {work.when}" if timed else f"--max-bytes {work.max_bytes}"
    # No --backup-count: the demo's is never reached, and without one a missing oldest record is lost, not expired.
    return f"flocklog verify {work.log_path} --ledger {work.ledger} {rotation}"


def verify_workload(work: Workload, result: Result, run: str) -> Report:
    """Check a workload's set against the writers' ledgers and what each writer said it wrote."""
    timed = KINDS[work.kind].rotation == "time"
    options = VerifyOptions(
        expected_counts=result.per_writer,
        writers=work.processes,
        run=run,
        when=work.when if timed else None,
        ledger=None if work.ledger is None else str(work.ledger),
        backup_count=work.backup_count,
        max_bytes=None if timed else work.max_bytes,
        allow_expired=False,  # backup counts are sized so that retention removes nothing: a gap is a loss
    )
    return verify_paths([str(work.log_path)], options)


def _row(kind: str, work: Workload, result: Result, report: Report) -> dict[str, Any]:
    size_defects = report.undersized_archives + report.same_second_rotations + report.excess_archives
    return {
        "kind": kind,
        "handler": KINDS[kind].label,
        "name": SHORT_NAMES[kind],
        "records": result.records,
        "seconds": round(result.seconds, 3),
        "records_per_s": round(result.records_per_second, 1),
        "lost": report.lost,
        "duplicated": report.duplicated,
        "torn": report.torn,
        "misfiled": report.interval_violations + report.split_intervals,
        "bad_rotations": size_defects + report.missing_archives,
        "archives": report.archives,
        "handler_errors": result.handler_errors,
        "ok": report.ok and not result.errors,
        "errors": result.errors,
        "verify": verify_command(work),
    }


def _summary_line(row: dict[str, Any]) -> str:
    """The one plain line a piped run prints per handler: under 80 columns for realistic counts."""
    verdict = "clean" if row["ok"] else "DEFECTS"
    return (
        f"{row['name']}: {row['records']:,} records, lost {row['lost']:,}, dup {row['duplicated']:,},"
        f" torn {row['torn']:,}, misfiled {row['misfiled']:,}, bad rot. {row['bad_rotations']:,} -> {verdict}"
    )


def _advance(progress: Progress, task: TaskID, elapsed: float) -> None:
    progress.update(task, completed=elapsed)


def run_files_part(
    directory: Path,
    processes: int,
    seconds: float,
    max_bytes: int,
    console: Console | None,
    say: Callable[[str], None] | None,
) -> list[dict[str, Any]]:
    """Run each handler kind and verify its set; live progress on ``console`` (a TTY), else a line via ``say``."""
    rows: list[dict[str, Any]] = []
    progress: Progress | None = None
    if console is not None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=20),
            TimeElapsedColumn(),
            console=console,
            transient=True,  # the table that follows says the same, whole
        )
        progress.start()
    try:
        for kind in DEMO_KINDS:
            work = _workload(directory, kind, processes, seconds, max_bytes)
            run = uuid.uuid4().hex[:10]
            tick = None
            task = None
            if progress is not None:
                task = progress.add_task(f"{SHORT_NAMES[kind]}: {processes} processes writing", total=seconds)
                tick = functools.partial(_advance, progress, task)
            result = run_workload(work, run, on_tick=tick)
            if progress is not None and task is not None:
                progress.update(task, completed=seconds, description=f"{SHORT_NAMES[kind]}: verifying")
            report = verify_workload(work, result, run)
            row = _row(kind, work, result, report)
            rows.append(row)
            if progress is not None and task is not None:
                verdict = "[green]clean[/green]" if row["ok"] else "[red]DEFECTS[/red]"
                progress.update(task, description=f"{SHORT_NAMES[kind]}: {row['records']:,} records, {verdict}")
            if say is not None:
                say(_summary_line(row))
    finally:
        if progress is not None:
            progress.stop()
    return rows


def render_files(rows: list[dict[str, Any]], processes: int, seconds: float, console: Console) -> None:
    """The files table: every handler name and verdict whole at 80 columns; more columns on wider terminals."""
    from rich import box
    from rich.table import Table

    wide = console.width >= 100
    table = Table(
        title=f"{processes} processes x {seconds:g} s, one log set per handler (stdlib's or flocklog's)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
    )
    columns = ["handler", "records", "lost", "dup", "torn", "misfiled", "bad rot.", "verdict"]
    if wide:
        columns[2:2] = ["records/s"]
        columns[-1:-1] = ["archives"]
    for column in columns:
        table.add_column(column, justify="left" if column == "handler" else "right", no_wrap=True)
    for row in rows:
        cells = {
            "handler": row["name"],
            "records": f"{row['records']:,}",
            "records/s": f"{row['records_per_s']:,.0f}",
            "lost": f"{row['lost']:,}",
            "dup": f"{row['duplicated']:,}",
            "torn": f"{row['torn']:,}",
            "misfiled": f"{row['misfiled']:,}",
            "bad rot.": f"{row['bad_rotations']:,}",
            "archives": f"{row['archives']:,}",
            "verdict": "[green]clean[/green]" if row["ok"] else "[red]DEFECTS[/red]",
        }
        table.add_row(*(cells[column] for column in columns))
    console.print(table)
    for line in (
        "size/timed: RotatingFileHandler/TimedRotatingFileHandler; lost: logged, not in",
        "the set; dup: in it twice; torn: broken lines; misfiled: in another time",
        "slot's file; bad rot.: archive rotated before it was full, or missing",
    ):
        console.print(line, style="dim", highlight=False)
    for row in rows:
        for error in row["errors"]:
            console.print(f"[red]{row['name']}: {error}[/red]")


def run_pipeline_part(
    directory: Path, processes: int, records: int, console: Console | None, say: Callable[[str], None] | None
) -> dict[str, Any] | None:
    """The execution-log pipeline on its embedded defaults; ``None`` (and a line saying why) without the extra."""
    try:
        from flocklog.pipeline.demo import run_pipeline_demo
    except ImportError as exc:
        if say is not None:
            say(f"pipeline part skipped: {exc}; install with: pip install 'flocklog[celery]'")
        return None
    if console is not None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task("pipeline: embedded broker -> SQLite", total=processes * records)
            summary = run_pipeline_demo(
                directory / "pipeline",
                producers=processes,
                records=records,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
    else:
        summary = run_pipeline_demo(directory / "pipeline", producers=processes, records=records)
    summary["ok"] = summary.get("rows") == summary.get("records_sent") and not summary.get("duplicates")
    if say is not None:
        say(
            f"pipeline: {summary['records_sent']:,} sent, {summary['rows']:,} stored,"
            f" {summary['duplicates']:,} duplicates, {summary['all_stored_s']:g} s -> "
            + ("clean" if summary["ok"] else "DEFECTS")
        )
    return summary


def render_pipeline(summary: dict[str, Any], console: Console) -> None:
    """The pipeline part as a sentence and a small table."""
    from rich import box
    from rich.table import Table

    stored = "every one" if summary["ok"] else f"{summary['rows']:,}"
    database = str(summary["database"]).removeprefix("sqlite:///")
    console.print(
        f"\n{summary['producers']} processes sent {summary['records_sent']:,} execution-log records through the"
        f" embedded broker to a Celery worker, which stored {stored} of them in {summary['all_stored_s']:g} s"
        f" ({database}):"
    )
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in ("records sent", "rows stored", "duplicates", "time to store", "rows/s", "verdict"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_row(
        f"{summary['records_sent']:,}",
        f"{summary['rows']:,}",
        f"{summary['duplicates']:,}",
        f"{summary['all_stored_s']:g} s",
        f"{summary['rows_per_s']:,.0f}",
        "[green]clean[/green]" if summary["ok"] else "[red]DEFECTS[/red]",
    )
    console.print(table)


def next_steps(rows: list[dict[str, Any]], directory: Path) -> list[str]:
    """The exact commands to look at the result and to go further."""
    return [row["verify"] for row in rows if row["kind"] in ("stdlib-size", "flocklog-size")]


def _shell_lines(command: str, width: int) -> list[str]:
    """``command`` as lines of at most ``width`` columns, continued with a backslash, so a copy still runs."""
    lines: list[str] = []
    current = ""
    for word in command.split(" "):
        if current and len(current) + 1 + len(word) + 2 > width:
            lines.append(current + " \\")
            current = "    " + word
        else:
            current = f"{current} {word}" if current else word
    return [*lines, current]


def render_next(rows: list[dict[str, Any]], directory: Path, console: Console) -> None:
    steps = next_steps(rows, directory)
    if steps:
        console.print(f"Look at the result in {directory}/ (exit status 1 = defects, 0 = clean):")
        for step in steps:
            for line in _shell_lines(step, console.width - 2):
                console.print(f"  {line}", highlight=False, soft_wrap=True)
    console.print(f"Go further: examples/{EXAMPLES[0]}/README.md and the other examples/*/README.md", highlight=False)


@click.command()
@click.option("--processes", "-n", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--seconds", type=click.FloatRange(0.5, 120), default=3.0, show_default=True)
@click.option("--max-bytes", type=click.IntRange(4096), default=256 * 1024, show_default=True)
@click.option(
    "--records", type=click.IntRange(1), default=1000, show_default=True, help="Pipeline records per producer."
)
@click.option("--part", type=click.Choice(["all", "files", "pipeline"]), default="all", show_default=True)
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=Path("flocklog-demo"),
    show_default=True,
    help="Where the sets go: a new or empty directory, or one an earlier demo made.",
)
@click.option("--keep/--no-keep", default=True, show_default=True, help="Keep the log sets for a look afterwards.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object (no progress, no tables).")
def demo(
    processes: int,
    seconds: float,
    max_bytes: int,
    records: int,
    part: str,
    directory: Path,
    keep: bool,
    as_json: bool,
) -> None:
    """Show stdlib's rotating handlers losing records across processes, and flocklog's losing none."""
    from rich.console import Console

    prepare_directory(directory)
    console = Console()
    live = console if console.is_terminal and not as_json else None
    say = None if as_json or live is not None else functools.partial(click.echo, err=False)
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] | None = None
    if part in ("all", "files"):
        rows = run_files_part(directory, processes, seconds, max_bytes, live, say)
        if not as_json:
            render_files(rows, processes, seconds, console)
    if part in ("all", "pipeline"):
        summary = run_pipeline_part(directory, processes, records, live, say)
        if summary is not None and not as_json:
            render_pipeline(summary, console)
    flocklog_clean = all(row["ok"] for row in rows if row["kind"].startswith("flocklog"))
    ok = flocklog_clean and (summary is None or bool(summary["ok"]))
    if as_json:
        data = {"ok": ok, "directory": str(directory), "files": rows, "pipeline": summary}
        data["next"] = next_steps(rows, directory) if keep else []
        click.echo(json.dumps(data, indent=2, default=str))
    elif keep:
        render_next(rows, directory, console)
    if not keep:
        remove_directory(directory)
    sys.exit(0 if ok else 1)


def register(group: click.Group) -> None:
    group.add_command(demo)
