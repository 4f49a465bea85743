"""Run in a subprocess with ``TZ`` set: checks every second of both DST transition nights of a year.

Prints one JSON object: a digest of every slot computed (equal in every process), the invariant violations found,
and the instants where an interval-1 ``midnight``/``W*`` policy disagrees with the stdlib's ``computeRollover``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging.handlers
import os
import sys
import time

from flocklog.files.policies import TimePolicy

POLICIES = [
    ("midnight", 1, None),
    ("midnight", 1, dt.time(1, 30)),
    ("midnight", 1, dt.time(2, 30)),
    ("midnight", 1, dt.time(2, 0)),
    ("midnight", 1, dt.time(1, 0)),
    ("midnight", 2, dt.time(1, 45)),
    ("W6", 1, dt.time(1, 30)),
    ("W6", 1, None),
    ("H", 1, None),
    ("H", 2, None),
    ("M", 7, None),
    ("S", 30, None),
]


def nights(year: int) -> list[float]:
    """The local midnights before each UTC-offset change of ``year``."""
    found, t, end = [], time.mktime((year, 1, 1, 0, 0, 0, 0, 0, -1)), time.mktime((year + 1, 1, 1, 0, 0, 0, 0, 0, -1))
    offset = time.localtime(t).tm_gmtoff
    while t < end:
        t += 3600
        if time.localtime(t).tm_gmtoff != offset:
            offset = time.localtime(t).tm_gmtoff
            day = dt.date.fromtimestamp(t)
            found.append(dt.datetime.combine(day, dt.time(0, 0)).timestamp())
    return found


def main() -> None:
    prime = sys.argv[1] if len(sys.argv) > 1 else "none"
    year = 2026
    if prime != "none":  # glibc's mktime(isdst=-1) remembers the previous call: make the two processes differ
        time.mktime((year, 11, 1, 1, 30, 0, 0, 0, 1 if prime == "dst" else 0))
    digest = hashlib.sha256()
    violations: list[str] = []
    mismatches: dict[str, int] = {}
    stdlib_checked = 0
    for when, interval, at in POLICIES:
        policy = TimePolicy.create(when, interval, False, at)
        stdlib = None
        if interval == 1 and (when == "midnight" or when.startswith("W")):
            stdlib = logging.handlers.TimedRotatingFileHandler(os.devnull, when=when, atTime=at, delay=True)
        for night in nights(year):
            for second in range(0, 5 * 3600):
                t = night + second
                start = policy.start_of(t)
                following = policy.next_after(start)
                if not start <= t < following:
                    violations.append(f"{when}/{at}: {t} not in [{start}, {following})")
                if policy.start_of(start) != start or policy.start_of(following) != following:
                    violations.append(f"{when}/{at}: slot of {t} is not a fixed point")
                digest.update(f"{start!r} {following!r};".encode())
                if stdlib is not None and second % 60 == 0:
                    stdlib_checked += 1
                    if stdlib.computeRollover(t) != following:
                        key = f"{when}/{at}"
                        mismatches[key] = mismatches.get(key, 0) + 1
        if len(violations) > 20:
            break
    print(
        json.dumps(
            {
                "digest": digest.hexdigest(),
                "violations": violations[:20],
                "mismatches": mismatches,
                "checked": stdlib_checked,
                "nights": [dt.datetime.fromtimestamp(n).isoformat() for n in nights(year)],
            }
        )
    )


if __name__ == "__main__":
    main()
