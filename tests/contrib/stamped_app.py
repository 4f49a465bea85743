"""The application the SIGKILL tests serve (WSGI and ASGI): each request logs ``n`` stamped records of ``size`` bytes.

A 200 answer is the client's receipt, sent only once the handler has written every record of the request: in
files mode when ``emit()`` returned (the line is in the kernel), in hub mode once the hub acknowledged them (the
worker's client was drained). So a worker SIGKILLed mid-run can only take records whose answer never left it, and
the receipts are an honest per-writer expectation for ``flocklog verify --expect-file``.

With ``$STAMPED_APP_STDLIB=<log file>:<maxBytes>`` the module instead gives the root logger the stdlib's
``RotatingFileHandler`` when it is imported, in every worker that imports it: the set-up the README warns about.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from flocklog.stamps import Stamp, StampFilter

log = logging.getLogger("stamped_app")
log.addFilter(StampFilter())
DRAIN_TIMEOUT = 30.0

_stdlib = os.environ.get("STAMPED_APP_STDLIB")
if _stdlib:
    _path, _, _max_bytes = _stdlib.rpartition(":")
    _handler = logging.handlers.RotatingFileHandler(_path, maxBytes=int(_max_bytes), backupCount=1000)
    _handler.setFormatter(logging.Formatter("%(levelname)s %(asctime)s [PID:%(process)d, TID:%(thread)d] %(message)s"))
    logging.getLogger().addHandler(_handler)
    logging.getLogger().setLevel(logging.INFO)


def _delivered() -> bool:
    """True once every record logged so far left this process for good (a hub client's ``drain``)."""
    for handler in logging.getLogger().handlers:
        drain = getattr(handler, "drain", None)
        if drain is not None and not drain(DRAIN_TIMEOUT):
            return False
    return True


def log_request(query: dict[str, str]) -> bool:
    """Log the request's records; False (answer 503, no receipt) if they could not be delivered."""
    run, writer = query["run"], query["writer"]
    payload = "x" * int(query.get("size", "0"))
    for seq in range(int(query.get("n", "1"))):
        log.info(Stamp(run, writer, seq, payload))
    return _delivered()


def _query(raw: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(raw).items()}


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    query = _query(environ.get("QUERY_STRING", ""))
    ok = "run" in query and "writer" in query and log_request(query)
    body = b"ok\n" if ok else b"not delivered\n"
    status = "200 OK" if ok else "503 Service Unavailable"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def asgi_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    query = _query(scope.get("query_string", b"").decode("latin-1"))
    # Blocking the loop for a drain is what a receipt costs: the answer must not leave before the records do.
    ok = "run" in query and "writer" in query and log_request(query)
    body = b"ok\n" if ok else b"not delivered\n"
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200 if ok else 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})
