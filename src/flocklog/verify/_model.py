"""What ``flocklog verify`` is told (:class:`VerifyOptions`) and what it finds (:class:`Report` and its parts).

The report's counts are the contract with the command line, the demo and the tests; ``Report.ok`` is the one
place that decides which of them are defects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flocklog.errors import ConfigError

__all__ = ["FileReport", "Report", "VerifyOptions", "WriterReport", "read_expect_file"]


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
