"""Timed sets: the interval an archive's name claims, and whether its records (and the live file's) lie in it.

The suffixes are the stdlib's (``logging.handlers.TimedRotatingFileHandler``), so a set written by the stdlib is
read the same way as flocklog's; calendar days are local days unless ``utc``.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
import time
from pathlib import Path

from flocklog.verify._model import Report, VerifyOptions, _when_key

# The stdlib's archive suffixes (logging.handlers.TimedRotatingFileHandler), by ``when``.
_SUFFIX_FORMATS: dict[str, tuple[str, str]] = {
    "S": ("%Y-%m-%d_%H-%M-%S", r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}"),
    "M": ("%Y-%m-%d_%H-%M", r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}"),
    "H": ("%Y-%m-%d_%H", r"\d{4}-\d{2}-\d{2}_\d{2}"),
    "D": ("%Y-%m-%d", r"\d{4}-\d{2}-\d{2}"),
}


_UNIT_SECONDS = {"S": 1, "M": 60, "H": 3600}


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


def _slot_length(options: VerifyOptions) -> float:
    key = _when_key(options.when or "")
    if key is None:
        return 0.0
    return _interval_end(0.0, key, VerifyOptions(when=options.when, interval=options.interval, utc=True))
