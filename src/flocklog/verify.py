"""The integrity checker behind ``flocklog verify``: proves a log set lost, doubled and tore nothing.

It reads every file of a set (rotated and ``.gz`` archives included), finds the stamps that
:mod:`flocklog.stamps` writers put on each record and reports, per writer, gaps (lost), repeats (duplicated) and
a missing oldest prefix (expired, but only where the set's retention can explain it: otherwise lost); per line,
torn or corrupted records (plain text lines or JSON lines whose ``message`` holds the stamp); per timed archive,
records filed outside the interval its name claims and boundaries that were rotated more than once; per size set,
the rotation symptoms of unsafe multi-process rotation (archives far under ``maxBytes``, more rotations in one
second than the bytes written in it explain, more archives than the bytes explain, holes in the numbering).
Expected counts come from the caller, an ``--expect-file`` or a writers' ledger (:class:`flocklog.stamps.Ledger`).
"""

from __future__ import annotations

import calendar
import datetime as dt
import gzip
import json
import math
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
from flocklog.stamps import MARK, ParsedStamp, parse_stamp, read_ledger

__all__ = [
    "FileReport",
    "Report",
    "VerifyOptions",
    "WriterReport",
    "collect_files",
    "read_expect_file",
    "render_report",
    "verify_paths",
]

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
    # A missing oldest prefix: None counts it as expired only where retention explains it (backup_count reached,
    # max_age passed), else as lost; True accepts any prefix as expired (the caller vouches); False: always lost.
    allow_expired: bool | None = None
    allow_split: bool = False
    tolerance: float = 0.0
    backup_count: int | None = None  # the set's backupCount: fewer archives than this means nothing expired
    max_age: float | None = None  # seconds: the set's age retention
    max_bytes: int | None = None  # the set's maxBytes for the size-rotation checks (None: inferred; 0: no checks)
    ledger: str | None = None  # a directory of writers' ledgers (flocklog.stamps.Ledger): expected counts
    now: float | None = None  # the time retention is judged at (default: when verify runs)

    def __post_init__(self) -> None:
        if self.when is not None and _when_key(self.when) is None:
            raise ConfigError(f"unknown --when {self.when!r}: use S, M, H, D, MIDNIGHT or W0-W6")
        if self.interval < 1:
            raise ConfigError(f"--interval must be >= 1, got {self.interval}")
        if self.backup_count is not None and self.backup_count < 0:
            raise ConfigError(f"--backup-count must be >= 0, got {self.backup_count}")
        if self.max_age is not None and not self.max_age > 0:
            raise ConfigError(f"--max-age must be > 0 seconds, got {self.max_age}")
        if self.max_bytes is not None and self.max_bytes < 0:
            raise ConfigError(f"--max-bytes must be >= 0 (0: the set is not rotated by size), got {self.max_bytes}")


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
    bytes: int = 0
    first_created: float | None = None
    last_created: float | None = None


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
    undersized_archives: int = 0
    same_second_rotations: int = 0
    excess_archives: int = 0
    missing_archives: int = 0
    max_bytes: int | None = None
    max_bytes_inferred: bool = False
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

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
            self.undersized_archives,
            self.same_second_rotations,
            self.excess_archives,
            self.missing_archives,
            len(self.problems),
        )
        return self.records > 0 and not any(defects)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["archives"] = self.archives
        return data


def read_expect_file(path: str) -> dict[str, int]:
    """``--expect-file``: a JSON object of writer id to records written; a clear error for anything else."""
    try:
        data = json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--expect-file {path}: {exc}") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0 for k, v in data.items()
    ):
        raise ConfigError(f'--expect-file {path} must hold a JSON object {{"writer": count, ...}} with counts >= 0')
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


def _numbered_archives(report: Report, base_names: set[str]) -> dict[str, dict[int, FileReport]]:
    """Per live file name, its ``base.N`` / ``base.N.gz`` archives by number."""
    found: dict[str, dict[int, FileReport]] = {}
    for f in report.files:
        name = os.path.basename(f.path)
        name = name[:-3] if name.endswith(".gz") else name
        for base in base_names:
            tail = name[len(base) + 1 :] if name.startswith(base + ".") else ""
            if tail.isdigit():
                found.setdefault(base, {})[int(tail)] = f
    return found


def _archive_count(report: Report, base_names: set[str]) -> int:
    """The largest number of archives any one live file of the set has (what ``backupCount`` bounds)."""
    counts: Counter[str] = Counter()
    for f in report.files:
        name = os.path.basename(f.path)
        for base in base_names:
            if name.startswith(base + "."):
                counts[base] += 1
                break
    return max(counts.values(), default=0)


def _check_size_rotation(
    report: Report, base_names: set[str], bytes_per_second: Counter[int], options: VerifyOptions
) -> None:
    """The symptoms of several processes rotating one size set on their own, each a defect.

    A safe rotation archives a file only when it is full, so every archive holds about ``maxBytes``; k rotations
    in one second need about (k - 1) x ``maxBytes`` written in that second; and the archives (present or
    expired) can never outnumber the bytes divided by ``maxBytes``. Unsafe rotation breaks all three: a process
    whose handle still points at the renamed file rotates a file another process just started, leaving archives
    of a few records, several per second. Without ``max_bytes``, the median archive stands for it (three or more
    archives needed, and said so in the report).
    """
    by_base = _numbered_archives(report, base_names)
    if not by_base or options.max_bytes == 0:
        return
    max_bytes = options.max_bytes
    if max_bytes is None:
        sizes = sorted(f.bytes for numbered in by_base.values() for f in numbered.values() if f.unreadable is None)
        if len(sizes) < 3:
            return
        max_bytes = sizes[len(sizes) // 2]
        report.max_bytes_inferred = True
    report.max_bytes = max_bytes
    longest_line = max(
        (f.bytes / f.records for numbered in by_base.values() for f in numbered.values() if f.records), default=0.0
    )
    # An archive is rotated when the next record would not fit; records already formatted by other processes when
    # it rotated land in the next file, hence a generous margin: unsafe rotation misses it by orders of magnitude.
    full = max(1.0, 0.75 * max_bytes - 2 * longest_line)
    total_bytes = 0
    for base, numbered in by_base.items():
        live = [f for f in report.files if os.path.basename(f.path) == base]
        total_bytes += sum(f.bytes for f in numbered.values()) + sum(f.bytes for f in live)
        small = sorted(n for n, f in numbered.items() if f.unreadable is None and f.bytes < max_bytes / 2)
        report.undersized_archives += len(small)
        if small:
            shown = ", ".join(f"{base}.{n}" for n in small[:5]) + (" ..." if len(small) > 5 else "")
            report.problems.append(
                f"{len(small)} archive(s) under half of maxBytes={max_bytes} ({shown}): a file rotated before it"
                " was full, as processes rotating on their own do"
            )
        holes = sorted(set(range(1, max(numbered) + 1)) - set(numbered))
        report.missing_archives += len(holes)
        if holes:
            shown = ", ".join(f"{base}.{n}" for n in holes[:5]) + (" ..." if len(holes) > 5 else "")
            report.problems.append(
                f"{len(holes)} archive(s) missing inside the numbering ({shown}): retention removes only the oldest"
            )
        ends: Counter[int] = Counter(int(f.last_created) for f in numbered.values() if f.last_created is not None)
        for second, rotations in sorted(ends.items()):
            allowed = math.floor(bytes_per_second[second] / full) + 1
            if rotations > allowed:
                report.same_second_rotations += rotations - allowed
        archives = len(numbered)
        explained = math.ceil(total_bytes / full)
        if archives > explained:
            report.excess_archives += archives - explained
    if report.same_second_rotations:
        report.problems.append(
            f"{report.same_second_rotations} rotation(s) more than the bytes written in their second explain"
            f" (archives ending in the same second, maxBytes={max_bytes})"
        )
    if report.excess_archives:
        report.problems.append(
            f"{report.excess_archives} archive(s) more than {total_bytes} bytes at maxBytes={max_bytes} explain"
        )


_IN_FLIGHT = 0.5


@dataclass(frozen=True)
class _Retention:
    """What the set's retention can explain: a missing oldest prefix is expired only where this says so."""

    options: VerifyOptions
    archives: int
    oldest_record: float | None

    @property
    def slack(self) -> float:
        """Seconds a record may wait between its creation and its write (a descheduled process holding it), so a
        file's records are time-ordered only to within this: comparisons with the oldest record allow it."""
        return max(self.options.tolerance, _IN_FLIGHT)

    def explains(self, first: int, started: float | None) -> tuple[bool, str]:
        """``(explained, why not)`` for missing records of a writer, all written at or after ``started``.

        Retention removes whole oldest files, so records written after the oldest surviving record sit in a
        surviving file: they cannot have been removed by it, whatever the options say.
        """
        options = self.options
        if options.allow_expired is True:
            return True, ""
        if options.allow_expired is False:
            return False, "expired records are not allowed (--no-allow-expired)"
        if started is not None and self.oldest_record is not None and started > self.oldest_record + self.slack:
            return False, "they were written after the oldest surviving record, so retention cannot have removed them"
        if options.backup_count is not None and options.backup_count > 0 and self.archives >= options.backup_count:
            return True, ""
        if options.max_age is not None:
            now = time.time() if options.now is None else options.now
            cutoff = now - options.max_age
            slack = options.tolerance + _slot_length(options)
            if started is not None and started <= cutoff:
                return True, ""
            if started is None and self.oldest_record is not None and self.oldest_record <= cutoff + slack:
                return True, ""
        if options.backup_count is not None:
            return (
                False,
                f"the set holds {self.archives} archive(s) and backupCount={options.backup_count} was never reached",
            )
        if options.max_age is not None:
            return False, f"nothing in the set is old enough for max_age={options.max_age:g}s to have removed it"
        return False, "no --backup-count or --max-age explains it (--allow-expired would accept it)"


def _slot_length(options: VerifyOptions) -> float:
    key = _when_key(options.when or "")
    if key is None:
        return 0.0
    return _interval_end(0.0, key, VerifyOptions(when=options.when, interval=options.interval, utc=True))


def _check_writers(
    seqs: dict[tuple[str, str], Counter[int]],
    first_seen: dict[tuple[str, str], float],
    ledger: Mapping[tuple[str, str], tuple[int, float, float]],
    retention: _Retention,
    options: VerifyOptions,
    report: Report,
) -> None:
    for (run, writer), counter in sorted(seqs.items()):
        expect = options.expect_per_writer
        if options.expected_counts is not None:
            expect = options.expected_counts.get(writer, expect)
        booked = ledger.get((run, writer))
        started = None if booked is None else booked[1]
        tail_expired = False
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
        )
        if booked is not None:
            # The ledger is written after each record, so a killed writer may have logged one more than it says.
            if last > booked[0]:
                report.problems.append(f"writer {writer} has seq {last}, beyond its ledger's {booked[0]} records")
            expect = max(booked[0], last + 1) if expect is None else expect
        if expect is not None:
            if last >= expect and booked is None:
                report.problems.append(f"writer {writer} has seq {last}, beyond the expected {expect}")
            tail = max(0, expect - 1 - last)
            if tail and booked is not None:
                # A writer that stopped long before the others: retention may have removed its newest records
                # too, but only if it wrote them all before the oldest surviving record (written at booked[2]).
                explained, _ = retention.explains(tail, None)
                newest = booked[2]
                if (
                    explained
                    and retention.oldest_record is not None
                    and newest < retention.oldest_record + retention.slack
                ):
                    writer_report.expired += tail
                    tail_expired = True
                else:
                    report.notes.append(f"writer {writer}: newest {tail:,} missing, counted as lost")
            if tail and not tail_expired:
                writer_report.lost += tail
        if first > 0:
            explained, why = retention.explains(first, started)
            if explained:
                writer_report.expired += first
            else:
                writer_report.lost += first
                report.notes.append(f"writer {writer}: oldest {first:,} missing, counted as lost: {why}")
        report.writers.append(writer_report)
        report.lost += writer_report.lost
        report.duplicated += writer_report.duplicated
        report.expired += writer_report.expired
    found = {writer for _, writer in seqs}
    if options.expected_counts is not None:
        silent = {w: n for w, n in options.expected_counts.items() if w not in found and n > 0}
        report.missing_writers += len(silent)
        report.lost += sum(silent.values())
    for (run, writer), (count, started, newest) in sorted(ledger.items()):
        if (run, writer) in seqs or count == 0:
            continue
        if options.expected_counts is not None and writer in options.expected_counts:
            continue  # counted above
        explained, why = retention.explains(count, started)
        if explained and retention.oldest_record is not None and newest < retention.oldest_record + retention.slack:
            report.expired += count  # every record of it older than the oldest surviving one: retention
            continue
        report.missing_writers += 1
        report.lost += count
        report.notes.append(f"writer {writer} logged {count} record(s) by its ledger; none is in the set")
    if options.writers is not None and len(seqs) < options.writers:
        report.missing_writers = max(report.missing_writers, options.writers - len(seqs))
        if options.expect_per_writer is not None:
            report.lost += (options.writers - len(seqs)) * options.expect_per_writer
    if options.writers is not None and len(seqs) > options.writers:
        report.problems.append(f"found {len(seqs)} writers, expected {options.writers}")


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
