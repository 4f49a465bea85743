"""The suite's one rule for a missing service: skip with the reason outside CI, fail under ``CI=true``.

A module of its own (not ``conftest``) so that helper modules in every test folder can import it: ``from
conftest import need`` is ambiguous in a full run, where pytest imports several ``conftest.py`` under one name.
"""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def need(condition: bool, reason: str) -> None:
    """Skip (outside CI) or fail (under CI) when a service, program or privilege a test needs is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing service is a failure, not a skip)")
    pytest.skip(reason)
