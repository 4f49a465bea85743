"""Packaging: what `pip install flocklog` gives on every supported Python, and one version source."""

from __future__ import annotations

import glob
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import flocklog
from conftest import need

ROOT = Path(__file__).resolve().parents[1]


def _python310() -> str | None:
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10.*/bin/python3.10")))
    if candidates:  # a pyenv shim on PATH may refuse to run a version that is not selected: take the real one
        return candidates[-1]
    return shutil.which("python3.10")


@pytest.mark.slow
def test_a_toml_hub_config_loads_on_python_3_10_after_a_plain_install(tmp_path: Path) -> None:
    """tomllib is 3.11+: on 3.10 the hub's TOML loader needs tomli, so the package must depend on it there."""
    python = _python310()
    need(python is not None, "no Python 3.10 interpreter on this machine (pyenv install 3.10)")
    assert python is not None
    venv = tmp_path / "venv310"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    # a copy of the source, so the build leaves nothing in the work tree
    source = tmp_path / "src-copy"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__"))
    result = subprocess.run([*pip, str(source)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    config = tmp_path / "hub.toml"
    config.write_text('version = 1\n[root]\nlevel = "INFO"\nhandlers = []\n')
    code = f"from flocklog.hub._cli import load_config; print(load_config({str(config)!r})['root']['level'])"
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0 and result.stdout.strip() == "INFO", result.stderr


def test_the_version_has_one_source() -> None:
    assert importlib.metadata.version("flocklog") == flocklog.__version__
    assert not re.search(r'^version = "', (ROOT / "pyproject.toml").read_text(), re.M)  # no copy to drift
    out = subprocess.run(
        [sys.executable, "-m", "flocklog", "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    assert flocklog.__version__ in out.stdout


def test_the_uvicorn_extra_does_not_pull_fastapi() -> None:
    """The integration needs uvicorn only; FastAPI is for the example apps (the `examples` extra)."""
    text = (ROOT / "pyproject.toml").read_text()
    line = re.search(r"^uvicorn = \[(.*)\]", text, re.M)
    assert line is not None and "uvicorn" in line.group(1) and "fastapi" not in line.group(1).lower(), line
