"""Fixtures for the integration tests: every server a test starts is killed (with its process group) at the end."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from contrib_helpers import Server


@pytest.fixture
def start_server() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(args: list[str], *, cwd: Path, env: dict[str, str], log: Path) -> Server:
        server = Server(args, cwd=cwd, env=env, log=log)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()
