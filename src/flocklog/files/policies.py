"""Time-rotation boundaries computed from the clock, so every process agrees on them whenever it started.

The stdlib computes a process's next rollover from the moment it started (or from the file's mtime), which is why N
processes rotate N times. Here an interval is a fixed slot of the calendar: ``start_of(t)`` is the same number in
every process for the same instant. Day-based slots follow local calendar days, so a day across a DST change is 23
or 25 hours long, as with the stdlib's ``midnight`` and ``W0``-``W6``.

Determinism across DST: a local wall time is turned into an instant by ``datetime.timestamp()`` (which probes
``localtime`` and picks the first occurrence of a repeated time, and the pre-transition offset for a skipped one),
never by ``time.mktime(..., isdst=-1)``, whose answer for an ambiguous time depends on the previous call in the
process. Sub-day slots never span a UTC-offset change: one that would is cut at the change.
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
_ONE_DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class TimePolicy:
    """Which calendar slot an instant belongs to, for one ``when``/``interval``/``utc``/``atTime``.

    Slots partition time: ``start_of(t) <= t < next_after(start_of(t))`` and ``start_of(start_of(t)) ==
    start_of(t)`` for every instant, in every process, whatever it computed before.
    """

    when: str  # normalised: S, M, H, D, MIDNIGHT, W0..W6
    interval: int
    utc: bool
    at_time: dt.time
    day_shift: int = 0  # W0-W6 without atTime rotate at the midnight that *ends* the named day, as the stdlib does

    @classmethod
    def create(cls, when: str, interval: float, utc: bool, at_time: dt.time | None) -> TimePolicy:
        normal = str(when).upper()
        if normal not in ("S", "M", "H", "D", "MIDNIGHT") and not re.fullmatch(r"W[0-6]", normal):
            raise ConfigError(
                f"invalid rollover interval specified: {when!r}; use S, M, H, D, MIDNIGHT or W0-W6 (W0 is Monday)"
            )
        if isinstance(interval, float) and interval.is_integer():
            interval = int(interval)
        if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
            raise ConfigError(f"interval must be a whole number >= 1, got {interval!r}")
        whole = int(interval)
        if at_time is not None and normal not in ("MIDNIGHT",) and not normal.startswith("W"):
            raise ConfigError(f"atTime only applies to when='midnight' or 'W0'-'W6', not {when!r}")
        if at_time is not None and not isinstance(at_time, dt.time):
            raise ConfigError(f"atTime must be a datetime.time, got {type(at_time).__name__}")
        shift = 1 if normal.startswith("W") and at_time is None else 0
        return cls(normal, whole, utc, (at_time or dt.time(0, 0, 0)).replace(tzinfo=None, fold=0), shift)

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
        """The boundary instant of local ``day``: its ``atTime`` (first occurrence if repeated, shifted if skipped)."""
        at = self.at_time
        if self.utc:
            return float(calendar.timegm((day.year, day.month, day.day, at.hour, at.minute, at.second, 0, 0, 0)))
        return dt.datetime.combine(day, at).timestamp()

    def _boundary_day(self, t: float) -> dt.date:
        """The latest local day whose boundary instant is at or before ``t`` (monotonic, so two steps suffice)."""
        day = self._date_of(t)
        while self._instant(day) > t:
            day -= _ONE_DAY
        while self._instant(day + _ONE_DAY) <= t:
            day += _ONE_DAY
        return day

    def _slot_day(self, day: dt.date) -> dt.date:
        """Align a boundary day down to the first day of its slot (weekday, then the interval since the epoch)."""
        if self.when.startswith("W"):
            target = (int(self.when[1]) + self.day_shift) % 7
            day -= dt.timedelta(days=(day.weekday() - target) % 7)
            weeks = (day - _EPOCH_DAY).days // 7
            return day - dt.timedelta(weeks=weeks % self.interval)
        return day - dt.timedelta(days=(day - _EPOCH_DAY).days % self.interval)

    def _last_offset_change(self, lo: float, hi: float) -> float:
        """The first whole second in ``(lo, hi]`` with ``hi``'s UTC offset (a binary search on ``localtime``)."""
        target = self._offset(hi)
        low, high = math.floor(lo), math.floor(hi)
        while high - low > 1:
            mid = (low + high) // 2
            if self._offset(mid) == target:
                high = mid
            else:
                low = mid
        return float(high)

    def start_of(self, t: float) -> float:
        """The start of the slot that contains instant ``t``."""
        if self.when in _UNIT_SECONDS:
            length = _UNIT_SECONDS[self.when] * self.interval
            offset = self._offset(t)
            start: float = math.floor((t + offset) / length) * length - offset
            if not self.utc and self._offset(start) != offset:
                start = max(start, self._last_offset_change(start, t))  # never span a DST change
            return float(start)
        return self._instant(self._slot_day(self._boundary_day(t)))

    def next_after(self, start: float) -> float:
        """The start of the slot after the one starting at ``start`` (DST-aware for day-based slots)."""
        if self.when in _UNIT_SECONDS:
            candidate = start + _UNIT_SECONDS[self.when] * self.interval
            aligned = self.start_of(candidate)
            return aligned if aligned > start else candidate
        day = self._slot_day(self._boundary_day(start))
        step = dt.timedelta(days=self.interval * (7 if self.when.startswith("W") else 1))
        following = self._instant(day + step)
        while following <= start:  # only if ``start`` was not itself a boundary
            day += step
            following = self._instant(day + step)
        return following

    def suffix(self, start: float, suffix_format: str | None = None) -> str:
        parts = time.gmtime(start) if self.utc else time.localtime(start)
        return time.strftime(suffix_format or self.suffix_format, parts)

    def parse_suffix(self, text: str, suffix_format: str | None = None) -> float:
        """The instant a suffix names (deterministic for repeated local times, unlike ``time.mktime``)."""
        moment = dt.datetime.strptime(text, suffix_format or self.suffix_format)
        if self.utc:
            return moment.replace(tzinfo=dt.timezone.utc).timestamp()
        return moment.timestamp()
