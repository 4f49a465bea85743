"""A plain WSGI application that logs one record per request (a stamped one when asked, for verification)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from flocklog.stamps import Stamp, StampFilter

log = logging.getLogger("gunicorn_app")
log.addFilter(StampFilter())


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if "run" in query and "writer" in query:
        # /?run=r1&writer=w7 logs a stamped record that 'flocklog verify' can account for.
        log.info(Stamp(query["run"][0], query["writer"][0], int(query.get("seq", ["0"])[0])))
    else:
        log.info("%s %s", environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/"))
    body = b"ok\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
