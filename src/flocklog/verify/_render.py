"""The report for a person (80 columns, rich); ``--json`` prints :meth:`Report.to_dict` instead."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from flocklog.verify._model import Report

__all__ = ["render_report"]


def _defects(report: Report) -> list[tuple[str, int]]:
    return [
        ("lost", report.lost),
        ("duplicated", report.duplicated),
        ("torn", report.torn),
        ("misfiled", report.interval_violations),
        ("split intervals", report.split_intervals),
        ("missing writers", report.missing_writers),
        ("unreadable files", report.unreadable),
        ("undersized archives", report.undersized_archives),
        ("same-second rotations", report.same_second_rotations),
        ("excess archives", report.excess_archives),
        ("missing archives", report.missing_archives),
    ]


def render_report(report: Report, console: Any = None) -> None:
    """Print the report for a person, within 80 columns; ``--json`` is the machine form."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    files = Table(title="files", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in ("file", "bytes", "records", "torn", "other", "slot start", "misfiled"):
        files.add_column(column, justify="left" if column in ("file", "slot start") else "right")
    for f in report.files:
        interval = "-"
        if f.interval_start is not None and f.interval_end is not None:
            start = dt.datetime.fromtimestamp(f.interval_start).strftime("%m-%d %H:%M:%S")
            interval = f"{start} +{f.interval_end - f.interval_start:g}s"
        name = os.path.basename(f.path) + (f" (unreadable: {f.unreadable})" if f.unreadable else "")
        files.add_row(
            name, f"{f.bytes:,}", f"{f.records:,}", str(f.torn), str(f.foreign), interval, str(f.interval_violations)
        )
    console.print(files)
    counts = f"{report.records:,} records from {len(report.writers)} writer(s) in {len(report.files)} file(s)"
    if report.expired:
        counts += f", {report.expired:,} expired by retention"
    console.print(counts, highlight=False)
    found = [f"{name} {value:,}" for name, value in _defects(report) if value]
    if report.ok:
        console.print("[green]ok[/green]: nothing lost, duplicated, torn or misfiled")
    else:
        reason = ", ".join(found) or ("no record found" if not report.records else "see the problems below")
        console.print(f"[red]DEFECTS[/red]: {reason}", highlight=False)
    for problem in report.problems:
        console.print(f"[red]problem:[/red] {problem}", highlight=False)
    for note in report.notes[:10]:
        console.print(f"note: {note}", highlight=False)
    if len(report.notes) > 10:
        console.print(f"note: ... and {len(report.notes) - 10} more (--json lists them all)")
