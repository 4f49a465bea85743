"""A task that logs through Celery's task logger and a plain logger: both land in logs/celery.log."""

import logging

from celery import shared_task
from celery.utils.log import get_task_logger

task_logger = get_task_logger(__name__)
plain_logger = logging.getLogger("myapp")


@shared_task
def my_task(note: str = "hello") -> str:
    task_logger.info("my_task ran: %s", note)
    plain_logger.info("plain logger in my_task: %s", note)
    return note
