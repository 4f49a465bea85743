"""DST: every instant of both transition nights lands in exactly one slot, the same one in every process."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from writers import POSIX

import flocklog

HERE = Path(__file__).resolve().parent
SRC = Path(flocklog.__file__).resolve().parents[1]  # the flocklog under test, also in the subprocesses
# Where flocklog deliberately differs from Python 3.13's computeRollover (README, "differences from the stdlib"):
# the stdlib rotates a second time in the repeated hour (01:30 EST after 01:30 EDT), and for an atTime skipped by
# the spring change (02:30) it jumps to the next day from 03:00 EDT although its own boundary is 03:30 EDT.
pytestmark = POSIX  # TZ and time.tzset()
KNOWN_DIFFERENCES = {"midnight/01:30:00": 30, "midnight/02:30:00": 30, "W6/01:30:00": 30}


def _check(tz: str, prime: str, python: str = sys.executable) -> dict[str, Any]:
    env = dict(os.environ, TZ=tz, PYTHONPATH=str(SRC))
    proc = subprocess.run(
        [python, str(HERE / "dst_check.py"), prime], capture_output=True, text=True, env=env, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.mark.parametrize("tz", ["America/New_York", "Europe/Berlin", "Australia/Lord_Howe"])
def test_every_second_of_both_transition_nights_is_in_exactly_one_slot_identical_in_every_process(tz: str) -> None:
    first = _check(tz, "dst")  # the two processes leave glibc's mktime in different states before computing
    second = _check(tz, "std")
    assert len(first["nights"]) == 2
    assert first["violations"] == [] and second["violations"] == []
    assert first["digest"] == second["digest"]


def test_interval_one_day_slots_match_python_3_13_except_the_documented_differences() -> None:
    newer = [sys.executable] if sys.version_info >= (3, 13) else []
    newer += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[3-9]*/bin/python3")))
    if not newer:
        pytest.skip("no Python >= 3.13 here (its computeRollover is the first to handle DST with atTime)")
    mine = _check("America/New_York", "none")
    theirs = _check("America/New_York", "none", newer[0])
    assert theirs["digest"] == mine["digest"]  # the same slots whatever the interpreter
    assert theirs["checked"] > 4000 and theirs["mismatches"] == KNOWN_DIFFERENCES
