"""``flocklog status ADDRESS``: ask a running hub for its counters over the same framed protocol."""

from __future__ import annotations

from typing import Any

from flocklog.errors import FrameError, HubError
from flocklog.hub._address import parse_address, resolve_secret
from flocklog.hub._session import ClientSession


def query_status(address: str, *, secret: str | None = None, timeout: float = 3.0) -> dict[str, Any]:
    """The hub's counters as a dict; HubError (saying what to check) if it cannot be reached or answered."""
    addr = parse_address(address)
    session = ClientSession(addr, resolve_secret(secret), timeout)
    try:
        session.send({"t": "status"})
        reply = session.receive()
    except (OSError, ConnectionError, FrameError) as exc:
        raise HubError(f"the hub at {addr} did not answer the status request: {exc}") from exc
    finally:
        session.close()
    data = reply.get("data")
    if reply.get("t") != "status" or not isinstance(data, dict):
        raise HubError(f"the peer at {addr} answered the status request with something else: {reply.get('t')!r}")
    return data
