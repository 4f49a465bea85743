"""The loguru example: spawned processes, each with a flocklog handler as a loguru sink, lose nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import flocklog

pytest.importorskip("loguru")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "loguru" / "app.py"


def test_loguru_processes_share_one_rotating_log_through_a_flocklog_handler(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(flocklog.__file__).resolve().parents[1]))
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--dir", str(tmp_path), "--processes", "4", "--records", "3000"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "12000 records" in proc.stdout and "lost 0, duplicated 0, torn 0" in proc.stdout
    assert len(list(tmp_path.glob("app.log.*"))) > 3  # it rotated, several times, across processes
