"""A FastAPI app that records one execution-log entry per request without touching the database itself.

The request path only appends to ExecutionLogger's buffer; batches go to Celery (queue ``logs``) and a worker
writes them to the store. The lifespan flushes on shutdown, so nothing logged before a restart is lost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from flocklog import ExecutionLogger

audit = ExecutionLogger("fastapi-example")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await audit.aflush(timeout=10)  # waits in a worker thread, never on the event loop
    audit.close()


app = FastAPI(lifespan=lifespan)


@app.post("/orders/{order_id}")
async def create_order(order_id: int, amount: float = 0.0) -> dict[str, str]:
    record = audit.info("order created", order=order_id, amount=amount)
    return {"execution_id": str(record.id)}
