"""``flocklog demo`` runs on a bare machine and shows flocklog's sets clean where the stdlib's are not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_files_part_shows_flocklog_clean_and_exits_zero(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    env = dict(subprocess_env, COLUMNS="200")
    demo_dir = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "flocklog.cli",
            "demo",
            "--part",
            "files",
            "--processes",
            "3",
            "--seconds",
            "1.5",
            "--dir",
            str(demo_dir),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 5}
    assert "clean" in rows["flocklog RotatingFileHandler"]
    assert "clean" in rows["flocklog TimedRotatingFileHandler"]
    # The sets stay behind for a look, and verify agrees with the demo's verdict from the outside.
    again = subprocess.run(
        [sys.executable, "-m", "flocklog.cli", "verify", str(demo_dir / "flocklog-size" / "app.log")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert again.returncode == 0, again.stdout
