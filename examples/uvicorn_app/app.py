"""A FastAPI application that logs one record per request; run it under the flocklog uvicorn wrapper."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from flocklog.stamps import Stamp, StampFilter

log = logging.getLogger("uvicorn_app")
log.addFilter(StampFilter())

app = FastAPI()


@app.get("/")
def index(run: str | None = None, writer: str | None = None, seq: int = 0) -> dict[str, str]:
    if run is not None and writer is not None:
        # /?run=r1&writer=w7 logs a stamped record that 'flocklog verify' can account for.
        log.info(Stamp(run, writer, seq))
    else:
        log.info("GET /")
    return {"status": "ok"}
