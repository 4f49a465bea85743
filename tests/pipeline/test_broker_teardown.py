"""A worker whose Redis connection is already torn down must see a connection error, not an AttributeError.

Celery treats any other exception while closing a lost connection as unrecoverable and exits; see
``flocklog.pipeline.celery_app._survive_broker_loss_during_teardown``.
"""

from __future__ import annotations

import uuid

import pytest
from kombu import Connection

from flocklog.pipeline.celery_app import make_celery_app


def test_closing_a_torn_down_channel_that_holds_unacked_messages_is_a_connection_error(redis_url: str) -> None:
    make_celery_app(redis_url).close()  # building the pipeline's app installs the guard
    connection = Connection(redis_url)
    queue = connection.SimpleQueue(f"flk-teardown-{uuid.uuid4().hex[:8]}")
    queue.put({"batch": 1})
    message = queue.get(timeout=5)  # delivered, not acked: closing the channel will try to restore it
    assert message.payload == {"batch": 1}
    channel = connection.default_channel
    transport = channel.connection
    errors = tuple(transport.connection_errors)
    transport.client = None  # what kombu's Connection.collect() leaves behind after the broker went away
    channel._pool = None
    with pytest.raises(errors):
        channel.close()  # an AttributeError here is what made Celery 5.7 call it unrecoverable
