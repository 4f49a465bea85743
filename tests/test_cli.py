"""The ``flocklog`` command as cron or systemd would run it: ``python -m flocklog``, errors as one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _flocklog(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flocklog", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_python_dash_m_flocklog_runs_the_command(tmp_path: Path) -> None:
    result = _flocklog("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("flocklog, version ")
    assert "Usage: flocklog " in _flocklog("verify", "--help", cwd=tmp_path).stdout


def test_a_bad_option_value_is_one_error_line_and_exit_status_1(tmp_path: Path) -> None:
    result = _flocklog("verify", "--when", "fortnightly", str(tmp_path / "app.log"), cwd=tmp_path)
    assert result.returncode == 1
    expected = "Error: unknown --when 'fortnightly': use S, M, H, D, MIDNIGHT or W0-W6"
    assert result.stderr.strip().splitlines() == [expected]
