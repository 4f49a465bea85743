"""The structured execution-log pipeline: ExecutionLogger -> transport (Celery | direct | spool) -> store."""

from flocklog.pipeline.logger import ExecutionLogger, ExecutionLogHandler
from flocklog.pipeline.record import ExecutionRecord

__all__ = ["ExecutionLogHandler", "ExecutionLogger", "ExecutionRecord"]
