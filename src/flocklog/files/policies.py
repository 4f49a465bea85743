"""Time-rotation boundaries computed from the clock, so every process agrees on them whenever it started.

The stdlib computes a process's next rollover from the moment it started (or from the file's mtime), which is why N
processes rotate N times. Here an interval is a fixed slot of the calendar: ``start_of(t)`` is the same number in
every process for the same instant. Day-based slots follow local calendar days, so a day across a DST change is 23
or 25 hours long, as with the stdlib's ``midnight`` and ``W0``-``W6``.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import re
import time
from dataclasses import dataclass

from flocklog.errors import ConfigError

_UNIT_SECONDS = {"S": 1, "M": 60, "H": 3600}
# The stdlib's suffixes and archive patterns (logging.handlers.TimedRotatingFileHandler), by unit.
SUFFIX_FORMATS = {
    "S": ("%Y-%m-%d_%H-%M-%S", r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}"),
    "M": ("%Y-%m-%d_%H-%M", r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}"),
    "H": ("%Y-%m-%d_%H", r"\d{4}-\d{2}-\d{2}_\d{2}"),
    "D": ("%Y-%m-%d", r"\d{4}-\d{2}-\d{2}"),
}
_EPOCH_DAY = dt.date(1970, 1, 1)


@dataclass(frozen=True)
class TimePolicy:
    """Which calendar slot an instant belongs to, for one ``when``/``interval``/``utc``/``atTime``."""

    when: str  # normalised: S, M, H, D, MIDNIGHT, W0..W6
    interval: int
    utc: bool
    at_time: dt.time

    @classmethod
    def create(cls, when: str, interval: int, utc: bool, at_time: dt.time | None) -> TimePolicy:
        normal = str(when).upper()
        if normal not in ("S", "M", "H", "D", "MIDNIGHT") and not re.fullmatch(r"W[0-6]", normal):
            raise ConfigError(
                f"invalid rollover interval specified: {when!r}; use S, M, H, D, MIDNIGHT or W0-W6 (W0 is Monday)"
            )
        if not isinstance(interval, int) or interval < 1:
            raise ConfigError(f"interval must be a whole number >= 1, got {interval!r}")
        if at_time is not None and normal not in ("MIDNIGHT",) and not normal.startswith("W"):
            raise ConfigError(f"atTime only applies to when='midnight' or 'W0'-'W6', not {when!r}")
        if at_time is not None and not isinstance(at_time, dt.time):
            raise ConfigError(f"atTime must be a datetime.time, got {type(at_time).__name__}")
        return cls(normal, interval, utc, at_time or dt.time(0, 0, 0))

    @property
    def unit(self) -> str:
        return self.when if self.when in _UNIT_SECONDS else "D"

    @property
    def suffix_format(self) -> str:
        return SUFFIX_FORMATS[self.unit][0]

    @property
    def suffix_pattern(self) -> str:
        return SUFFIX_FORMATS[self.unit][1]

    @property
    def seconds(self) -> int:
        """Nominal length of one slot (what the stdlib calls ``interval``)."""
        if self.when in _UNIT_SECONDS:
            return _UNIT_SECONDS[self.when] * self.interval
        return 86400 * self.interval * (7 if self.when.startswith("W") else 1)

    # -- conversions between instants and local (or UTC) calendar values
    def _offset(self, t: float) -> int:
        return 0 if self.utc else time.localtime(t).tm_gmtoff

    def _date_of(self, t: float) -> dt.date:
        parts = time.gmtime(t) if self.utc else time.localtime(t)
        return dt.date(parts.tm_year, parts.tm_mon, parts.tm_mday)

    def _instant(self, day: dt.date) -> float:
        at = self.at_time
        fields = (day.year, day.month, day.day, at.hour, at.minute, at.second, 0, 0, -1)
        return float(calendar.timegm(fields)) if self.utc else time.mktime(fields)

    def start_of(self, t: float) -> float:
        """The start of the slot that contains instant ``t``."""
        if self.when in _UNIT_SECONDS:
            length = _UNIT_SECONDS[self.when] * self.interval
            offset = self._offset(t)
            return math.floor((t + offset) / length) * length - offset
        day = self._date_of(t)
        if self._instant(day) > t:
            day -= dt.timedelta(days=1)
        if self.when.startswith("W"):
            day -= dt.timedelta(days=(day.weekday() - int(self.when[1])) % 7)
            weeks = (day - _EPOCH_DAY).days // 7
            day -= dt.timedelta(weeks=weeks % self.interval)
        else:
            day -= dt.timedelta(days=(day - _EPOCH_DAY).days % self.interval)
        return self._instant(day)

    def next_after(self, start: float) -> float:
        """The start of the slot after the one starting at ``start`` (DST-aware for day-based slots)."""
        if self.when in _UNIT_SECONDS:
            candidate = start + _UNIT_SECONDS[self.when] * self.interval
            aligned = self.start_of(candidate)
            return aligned if aligned > start else candidate
        day = self._date_of(start) + dt.timedelta(days=self.seconds // 86400)
        return self._instant(day)

    def suffix(self, start: float) -> str:
        parts = time.gmtime(start) if self.utc else time.localtime(start)
        return time.strftime(self.suffix_format, parts)

    def parse_suffix(self, text: str) -> float:
        parts = time.strptime(text, self.suffix_format)
        return float(calendar.timegm(parts)) if self.utc else time.mktime(parts)
