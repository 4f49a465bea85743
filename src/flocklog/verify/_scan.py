"""Reading a set: which files belong to it, each line's stamp, and the pass that feeds every check.

:func:`verify_paths` reads each file once (``.gz`` archives included) and hands what it saw to the timed
(:mod:`._slots`), size (:mod:`._size`) and writer (:mod:`._writers`) checks.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections import Counter
from pathlib import Path

from flocklog.stamps import MARK, ParsedStamp, parse_stamp, read_ledger
from flocklog.verify._model import FileReport, Report, VerifyOptions
from flocklog.verify._size import _archive_count, _check_size_rotation
from flocklog.verify._slots import _check_live_file, _interval_of
from flocklog.verify._writers import _check_writers, _Retention

__all__ = ["collect_files", "verify_paths"]


# Files that live beside a log set but are not part of it: lock files, rotation state, compressors' temp files.
_NOT_LOGS = re.compile(r"(\.lock|\.state|\.pid|\.sock)$|\.tmp|^\.")


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


def _stamp_of(line: str) -> ParsedStamp | None:
    """The stamp of a plain line, or of a JSON line's ``message``; ``None`` when it is broken (torn).

    Only called on lines that mention the mark. A JSON object that does not parse, or whose ``message`` does
    not end with an intact stamp, is torn like any other broken line.
    """
    text = line.strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            return None
        message = obj.get("message") if isinstance(obj, dict) else None
        return parse_stamp(message) if isinstance(message, str) else None
    return parse_stamp(line)


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
    first_seen: dict[tuple[str, str], float] = {}
    live_created: list[float] = []
    archive_ends: list[float] = []
    suffix_counts: Counter[str] = Counter()
    bytes_per_second: Counter[int] = Counter()
    for path in files:
        file_report = FileReport(path=str(path))
        report.files.append(file_report)
        try:
            data = _read_bytes(path)
        except (OSError, EOFError, zlib.error) as exc:
            file_report.unreadable = f"{type(exc).__name__}: {exc}"
            report.unreadable += 1
            continue
        file_report.bytes = len(data)
        interval = _interval_of(path, base_names, options)
        if interval is not None:
            file_report.interval_start, file_report.interval_end, suffix = interval
            suffix_counts[suffix] += 1
            archive_ends.append(interval[1])
        lines = data.split(b"\n")
        if lines[-1]:
            file_report.torn += 1  # the last record has no terminator: a partial write
        second: int | None = None  # the last stamped record's second: where a line without a stamp was written
        for raw in lines[:-1]:
            line = raw.decode("utf-8", errors="replace").rstrip("\r")
            if MARK not in line:
                file_report.foreign += 1
                if second is not None:  # a framework's own lines fill files too: count their bytes, or a full
                    bytes_per_second[second] += len(raw) + 1  # archive of them looks like an early rotation
                continue
            stamp = _stamp_of(line)
            if stamp is None:
                file_report.torn += 1
                continue
            if options.run is not None and stamp.run != options.run:
                file_report.foreign += 1
                continue
            file_report.records += 1
            key = (stamp.run, stamp.writer)
            seqs.setdefault(key, Counter())[stamp.seq] += 1
            first_seen[key] = min(first_seen.get(key, stamp.created), stamp.created)
            second = int(stamp.created)
            bytes_per_second[second] += len(raw) + 1
            if file_report.first_created is None or stamp.created < file_report.first_created:
                file_report.first_created = stamp.created
            if file_report.last_created is None or stamp.created > file_report.last_created:
                file_report.last_created = stamp.created
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
    archives = _archive_count(report, base_names)
    if options.when is None and not options.allow_split:
        _check_size_rotation(report, base_names, bytes_per_second, options)
    ledger: dict[tuple[str, str], tuple[int, float, float]] = {}
    if options.ledger is not None:
        try:
            ledger = read_ledger(options.ledger)
        except (OSError, ValueError) as exc:
            report.problems.append(f"cannot read the ledger {options.ledger}: {exc}")
        if options.run is not None:
            ledger = {key: value for key, value in ledger.items() if key[0] == options.run}
        if not ledger and not report.problems:
            report.problems.append(f"the ledger {options.ledger} holds no writer: nothing to compare with")
    oldest = min((f.first_created for f in report.files if f.first_created is not None), default=None)
    retention = _Retention(options, archives, oldest)
    _check_writers(seqs, first_seen, ledger, retention, options, report)
    return report
