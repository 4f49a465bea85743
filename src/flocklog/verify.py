"""The integrity checker behind ``flocklog verify``: proves a log set lost, doubled and tore nothing.

It reads every file of a set (rotated and ``.gz`` archives included), finds the stamps that
:mod:`flocklog.testing` writers put on each record and reports, per writer, gaps (lost), repeats (duplicated) and
a missing oldest prefix (expired by retention); per line, torn or corrupted records; per timed archive, records
filed outside the interval its name claims and boundaries that were rotated more than once.
"""

from __future__ import annotations

import calendar
import datetime as dt
import gzip
import os
import re
import time
import zlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flocklog.errors import ConfigError
from flocklog.testing import MARK, parse_stamp

# The stdlib's archive suffixes (logging.handlers.TimedRotatingFileHandler), by ``when``.
_SUFFIX_FORMATS: dict[str, tuple[str, str]] = {
    "S": ("%Y-%m-%d_%H-%M-%S", r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}"),
    "M": ("%Y-%m-%d_%H-%M", r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}"),
    "H": ("%Y-%m-%d_%H", r"\d{4}-\d{2}-\d{2}_\d{2}"),
    "D": ("%Y-%m-%d", r"\d{4}-\d{2}-\d{2}"),
}
_UNIT_SECONDS = {"S": 1, "M": 60, "H": 3600}
# Files that live beside a log set but are not part of it: lock files, rotation state, compressors' temp files.
_NOT_LOGS = re.compile(r"(\.lock|\.state|\.pid|\.sock)$|\.tmp|^\.")


@dataclass(frozen=True)
class VerifyOptions:
    """What the checker may assume about the writers and the rotation that produced the set."""

    expect_per_writer: int | None = None
    expected_counts: Mapping[str, int] | None = None  # per writer id, when writers wrote different amounts
    writers: int | None = None
    run: str | None = None
    when: str | None = None
    interval: int = 1
    utc: bool = False
    allow_expired: bool = True
    allow_split: bool = False
    tolerance: float = 0.0

    def __post_init__(self) -> None:
        if self.when is not None and _when_key(self.when) is None:
            raise ConfigError(f"unknown --when {self.when!r}: use S, M, H, D, MIDNIGHT or W0-W6")
        if self.interval < 1:
            raise ConfigError(f"--interval must be >= 1, got {self.interval}")


@dataclass
class FileReport:
    path: str
    records: int = 0
    torn: int = 0
    foreign: int = 0
    unreadable: str | None = None
    interval_start: float | None = None
    interval_end: float | None = None
    interval_violations: int = 0


@dataclass
class WriterReport:
    run: str
    writer: str
    records: int = 0
    first: int = -1
    last: int = -1
    lost: int = 0
    expired: int = 0
    duplicated: int = 0


@dataclass
class Report:
    files: list[FileReport] = field(default_factory=list)
    writers: list[WriterReport] = field(default_factory=list)
    records: int = 0
    lost: int = 0
    duplicated: int = 0
    torn: int = 0
    expired: int = 0
    foreign: int = 0
    interval_violations: int = 0
    split_intervals: int = 0
    missing_writers: int = 0
    unreadable: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def archives(self) -> int:
        return max(0, len(self.files) - 1)

    @property
    def ok(self) -> bool:
        """True only for a non-empty set with no defect: an empty set proves nothing."""
        defects = (
            self.lost,
            self.duplicated,
            self.torn,
            self.interval_violations,
            self.split_intervals,
            self.missing_writers,
            self.unreadable,
            len(self.problems),
        )
        return self.records > 0 and not any(defects)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["archives"] = self.archives
        return data


def _when_key(when: str) -> str | None:
    upper = when.upper()
    if upper in ("S", "M", "H", "D"):
        return upper
    if upper == "MIDNIGHT" or re.fullmatch(r"W[0-6]", upper):
        return upper
    return None


def collect_files(paths: list[str]) -> list[Path]:
    """The files of each set: a directory's log files, or a base file plus its ``base.*`` archives."""
    found: dict[str, Path] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            candidates = [p for p in path.iterdir() if p.is_file()]
        else:
            parent = path.parent if str(path.parent) else Path(".")
            prefix = path.name + "."
            candidates = [path] if path.is_file() else []
            if parent.is_dir():
                candidates += [p for p in parent.iterdir() if p.is_file() and p.name.startswith(prefix)]
        for candidate in candidates:
            if not _NOT_LOGS.search(candidate.name):
                found[str(candidate)] = candidate
    return [found[key] for key in sorted(found)]


def _read_bytes(path: Path) -> bytes:
    if path.name.endswith(".gz"):
        with gzip.open(path, "rb") as handle:
            return handle.read()
    return path.read_bytes()


def _interval_of(path: Path, base_names: set[str], options: VerifyOptions) -> tuple[float, float, str] | None:
    """The ``[start, end)`` a timed archive's name claims, plus its suffix; ``None`` for the live file."""
    key = _when_key(options.when or "")
    if key is None:
        return None
    fmt, pattern = _SUFFIX_FORMATS[key if key in _SUFFIX_FORMATS else "D"]
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    for base in base_names:
        if not name.startswith(base + "."):
            continue
        match = re.match(pattern, name[len(base) + 1 :])
        if match is None:
            continue
        start_struct = time.strptime(match.group(0), fmt)
        start = float(calendar.timegm(start_struct)) if options.utc else time.mktime(start_struct)
        return start, _interval_end(start, key, options), match.group(0)
    return None


def _interval_end(start: float, key: str, options: VerifyOptions) -> float:
    if key in _UNIT_SECONDS:
        return start + _UNIT_SECONDS[key] * options.interval
    days = options.interval * (7 if key.startswith("W") else 1)
    if options.utc:
        return start + days * 86400
    # Calendar days in local time: a day across a DST change is 23 or 25 hours, as the stdlib rotates it.
    local = dt.datetime.fromtimestamp(start) + dt.timedelta(days=days)
    return time.mktime(local.timetuple())


def verify_paths(paths: list[str], options: VerifyOptions | None = None) -> Report:
    """Check the log sets at ``paths``; see the module docstring for what each count means."""
    options = options or VerifyOptions()
    report = Report()
    files = collect_files(paths)
    if not files:
        report.problems.append(f"no log files found at {', '.join(paths)}")
        return report
    base_names = _base_names(paths, files)
    seqs: dict[tuple[str, str], Counter[int]] = {}
    live_created: list[float] = []
    archive_ends: list[float] = []
    suffix_counts: Counter[str] = Counter()
    for path in files:
        file_report = FileReport(path=str(path))
        report.files.append(file_report)
        try:
            data = _read_bytes(path)
        except (OSError, EOFError, zlib.error) as exc:
            file_report.unreadable = f"{type(exc).__name__}: {exc}"
            report.unreadable += 1
            continue
        interval = _interval_of(path, base_names, options)
        if interval is not None:
            file_report.interval_start, file_report.interval_end, suffix = interval
            suffix_counts[suffix] += 1
            archive_ends.append(interval[1])
        lines = data.split(b"\n")
        if lines[-1]:
            file_report.torn += 1  # the last record has no terminator: a partial write
        for raw in lines[:-1]:
            line = raw.decode("utf-8", errors="replace").rstrip("\r")
            if MARK not in line:
                file_report.foreign += 1
                continue
            stamp = parse_stamp(line)
            if stamp is None:
                file_report.torn += 1
                continue
            if options.run is not None and stamp.run != options.run:
                file_report.foreign += 1
                continue
            file_report.records += 1
            seqs.setdefault((stamp.run, stamp.writer), Counter())[stamp.seq] += 1
            if interval is not None:
                if not interval[0] - options.tolerance <= stamp.created < interval[1] + options.tolerance:
                    file_report.interval_violations += 1
            elif options.when is not None and not _is_size_archive(path, base_names):
                live_created.append(stamp.created)
        report.records += file_report.records
        report.torn += file_report.torn
        report.foreign += file_report.foreign
        report.interval_violations += file_report.interval_violations

    if options.when is not None:
        report.interval_violations += _check_live_file(live_created, archive_ends, options, report)
        if not options.allow_split:
            report.split_intervals = sum(count - 1 for count in suffix_counts.values() if count > 1)
    _check_writers(seqs, options, report)
    return report


def _base_names(paths: list[str], files: list[Path]) -> set[str]:
    """Names of the live files: given explicitly, or (for a directory) the files no other file extends."""
    names = {Path(p).name for p in paths if not Path(p).is_dir()}
    if names:
        return names
    all_names = [f.name for f in files]
    return {n for n in all_names if not any(o != n and n.startswith(o + ".") for o in all_names)}


def _is_size_archive(path: Path, base_names: set[str]) -> bool:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return any(name.startswith(base + ".") and name[len(base) + 1 :].isdigit() for base in base_names)


def _check_live_file(created: list[float], archive_ends: list[float], options: VerifyOptions, report: Report) -> int:
    """Records in the live file must all be newer than every archive and span less than one interval."""
    if not created:
        return 0
    violations = 0
    newest_archive_end = max(archive_ends, default=float("-inf"))
    if options.allow_split and archive_ends:
        # Size-or-time rotation: the live file may continue the newest archive's interval, not precede it.
        key = _when_key(options.when or "") or "S"
        newest_start = max(archive_ends) - (_interval_end(max(archive_ends), key, options) - max(archive_ends))
        newest_archive_end = newest_start
    violations += sum(1 for c in created if c < newest_archive_end - options.tolerance)
    key = _when_key(options.when or "") or "S"
    length = _interval_end(min(created), key, options) - min(created)
    if max(created) - min(created) >= length + options.tolerance:
        report.problems.append(
            f"the live file holds records {max(created) - min(created):.3f}s apart: more than one interval"
        )
    return violations


def _check_writers(seqs: dict[tuple[str, str], Counter[int]], options: VerifyOptions, report: Report) -> None:
    for (run, writer), counter in sorted(seqs.items()):
        expect = options.expect_per_writer
        if options.expected_counts is not None:
            expect = options.expected_counts.get(writer)
        unique = sorted(counter)
        first, last = unique[0], unique[-1]
        writer_report = WriterReport(
            run=run,
            writer=writer,
            records=sum(counter.values()),
            first=first,
            last=last,
            duplicated=sum(count - 1 for count in counter.values()),
            lost=(last - first + 1) - len(unique),
            expired=first,
        )
        if expect is not None:
            if last >= expect:
                report.problems.append(f"writer {writer} has seq {last}, beyond the expected {expect}")
            writer_report.lost += max(0, expect - 1 - last)
        if not options.allow_expired:
            writer_report.lost += writer_report.expired
        report.writers.append(writer_report)
        report.lost += writer_report.lost
        report.duplicated += writer_report.duplicated
        report.expired += writer_report.expired
    found = {writer for _, writer in seqs}
    if options.expected_counts is not None:
        silent = {w: n for w, n in options.expected_counts.items() if w not in found and n > 0}
        report.missing_writers += len(silent)
        report.lost += sum(silent.values())
    if options.writers is not None and len(seqs) < options.writers:
        report.missing_writers = max(report.missing_writers, options.writers - len(seqs))
        if options.expect_per_writer is not None:
            report.lost += (options.writers - len(seqs)) * options.expect_per_writer
    if options.writers is not None and len(seqs) > options.writers:
        report.problems.append(f"found {len(seqs)} writers, expected {options.writers}")


def render_report(report: Report) -> None:
    """Print the report as tables for a person; ``--json`` is the machine form."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    files = Table(title="files")
    for column in ("file", "records", "torn", "other lines", "interval", "misfiled"):
        files.add_column(column, justify="left" if column == "file" else "right")
    for f in report.files:
        interval = "-"
        if f.interval_start is not None and f.interval_end is not None:
            start = dt.datetime.fromtimestamp(f.interval_start).strftime("%Y-%m-%d %H:%M:%S")
            interval = f"{start} +{f.interval_end - f.interval_start:g}s"
        name = os.path.basename(f.path) + (f" (unreadable: {f.unreadable})" if f.unreadable else "")
        files.add_row(name, str(f.records), str(f.torn), str(f.foreign), interval, str(f.interval_violations))
    console.print(files)
    summary = Table(title="verdict")
    for column in ("records", "writers", "lost", "duplicated", "torn", "expired", "misfiled", "split", "ok"):
        summary.add_column(column, justify="right")
    summary.add_row(
        str(report.records),
        str(len(report.writers)),
        str(report.lost),
        str(report.duplicated),
        str(report.torn),
        str(report.expired),
        str(report.interval_violations),
        str(report.split_intervals),
        "[green]yes[/green]" if report.ok else "[red]NO[/red]",
    )
    console.print(summary)
    for problem in report.problems:
        console.print(f"[red]problem:[/red] {problem}")
