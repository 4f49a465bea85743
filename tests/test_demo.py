"""``flocklog demo`` runs on a bare machine, shows flocklog's sets clean, reads well at 80 columns, and never
touches what it did not make."""

from __future__ import annotations

import io
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from flocklog._demo import MARKER, SHORT_NAMES, render_files, render_next, render_pipeline

QUICK = ["--processes", "2", "--seconds", "0.5"]


def _demo(*args: str, cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flocklog.cli", "demo", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def demo_json(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    cwd = tmp_path_factory.mktemp("demo-json")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    result = _demo("--part", "files", *QUICK, "--json", cwd=cwd, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout), cwd


def test_demo_json_has_every_number_and_flocklog_sets_are_clean(demo_json: tuple[dict[str, Any], Path]) -> None:
    data, _ = demo_json
    rows = {row["kind"]: row for row in data["files"]}
    assert set(rows) == set(SHORT_NAMES)
    for row in rows.values():
        assert {"records", "lost", "duplicated", "torn", "misfiled", "bad_rotations", "ok", "verify"} <= set(row)
    assert rows["flocklog-size"]["ok"] and rows["flocklog-timed"]["ok"] and data["ok"]


def test_the_verify_commands_the_demo_prints_agree_with_it(
    demo_json: tuple[dict[str, Any], Path], subprocess_env: dict[str, str]
) -> None:
    data, cwd = demo_json
    for row in data["files"]:
        argv = shlex.split(row["verify"])
        assert argv[:2] == ["flocklog", "verify"]
        again = subprocess.run(
            [sys.executable, "-m", "flocklog", *argv[1:]], cwd=cwd, capture_output=True, env=subprocess_env
        )
        assert again.returncode == (0 if row["ok"] else 1), (row, again.stdout[-2000:])


def test_demo_output_fits_80_columns_with_every_name_and_verdict_whole(
    demo_json: tuple[dict[str, Any], Path],
) -> None:
    data, _ = demo_json
    out = io.StringIO()
    console = Console(file=out, width=80, color_system=None, force_terminal=False)
    render_files(data["files"], 2, 0.5, console)
    summary = {"producers": 2, "records_sent": 2000, "rows": 2000, "duplicates": 0, "all_stored_s": 1.5}
    render_pipeline({**summary, "rows_per_s": 1333.3, "database": "sqlite:////x/flocklog.db", "ok": True}, console)
    render_next(data["files"], Path("flocklog-demo"), console)
    text = out.getvalue()
    assert "…" not in text, text
    table_lines = [line for line in text.splitlines() if line.strip()]
    for row in data["files"]:
        verdict = "clean" if row["ok"] else "DEFECTS"
        line = next(line for line in table_lines if line.strip().startswith(row["name"] + "  "))
        assert len(line) <= 80 and line.rstrip().endswith(verdict), line
        assert f"{row['records']:,}" in line and f"{row['lost']:,}" in line
    header = next(line for line in table_lines if line.startswith("handler "))
    assert header.split() == ["handler", "records", "lost", "dup", "torn", "misfiled", "bad", "rot.", "verdict"]
    for header in ("records sent", "rows stored", "duplicates", "time to store", "rows/s"):
        assert header in text
    assert all(len(line) <= 80 for line in text.splitlines()), text
    # The commands to look at the result are whole: continued with a backslash, they read back as the JSON's.
    commands = text.replace(" \\\n      ", " ")
    for row in data["files"]:
        if row["kind"] in ("stdlib-size", "flocklog-size"):
            assert f"  {row['verify']}\n" in commands, commands


def test_piped_demo_prints_one_plain_line_per_part(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    result = _demo("--part", "files", *QUICK, cwd=tmp_path, env=dict(subprocess_env, COLUMNS="80"))
    assert result.returncode == 0, result.stdout + result.stderr
    plain = [line for line in result.stdout.splitlines() if " -> " in line]
    assert [line.split(":")[0] for line in plain] == ["stdlib size", "stdlib timed", "flocklog size", "flocklog timed"]
    assert plain[2].endswith("-> clean") and plain[3].endswith("-> clean")
    assert "\r" not in result.stdout and "\x1b[" not in result.stdout  # no live progress into a pipe


def test_demo_leaves_nothing_in_the_working_directory_but_its_own(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    pytest.importorskip("celery")
    result = _demo(*QUICK, "--records", "50", cwd=tmp_path, env=subprocess_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(os.listdir(tmp_path)) == ["flocklog-demo"]  # kombu's control/ folder once landed here
    assert "rows stored" in result.stdout


def test_demo_refuses_a_directory_it_did_not_make(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    result = _demo("--part", "files", *QUICK, "--dir", str(precious), cwd=tmp_path, env=subprocess_env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: --dir {precious} is not empty and was not made by flocklog demo (no {MARKER} marker);"
        " choose a new or empty directory"
    ]
    assert sorted(os.listdir(precious)) == ["thesis.txt"]


def test_demo_reuses_its_own_directory_and_deletes_only_what_it_made(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    target = tmp_path / "demo"
    first = _demo("--part", "files", *QUICK, "--dir", str(target), cwd=tmp_path, env=subprocess_env)
    assert first.returncode == 0 and (target / MARKER).is_file(), first.stdout + first.stderr
    (target / "notes.txt").write_text("mine")
    second = _demo("--part", "files", *QUICK, "--dir", str(target), "--no-keep", cwd=tmp_path, env=subprocess_env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert sorted(os.listdir(target)) == ["notes.txt"]  # its sets are gone, the user's file stays
