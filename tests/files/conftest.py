"""Markers of the file-handler tests, so CI can deselect what a platform cannot run (``-m "not posix"``)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "posix: needs POSIX (fork, fcntl, owners and modes, /dev/null); not on Windows")
