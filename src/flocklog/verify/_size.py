"""Size sets: the rotation symptoms of several processes rotating one ``maxBytes`` set on their own."""

from __future__ import annotations

import math
import os
from collections import Counter

from flocklog.verify._model import FileReport, Report, VerifyOptions


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
