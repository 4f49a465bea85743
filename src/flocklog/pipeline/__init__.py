"""The structured execution-log pipeline: ExecutionLogger -> transport (Celery | direct | spool) -> store."""

from flocklog.pipeline.handler import ExecutionLogHandler
from flocklog.pipeline.logger import ExecutionLogger
from flocklog.pipeline.record import ExecutionRecord

__all__ = ["ExecutionLogHandler", "ExecutionLogger", "ExecutionRecord"]
