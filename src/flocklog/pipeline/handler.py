"""The bridge from stdlib ``logging`` into an execution log: one record per ``LogRecord``, same pipeline."""

from __future__ import annotations

import logging
from typing import Any

from flocklog.pipeline._reporter import INTERNAL
from flocklog.pipeline.logger import ExecutionLogger

__all__ = ["ExecutionLogHandler"]


class ExecutionLogHandler(logging.Handler):
    """A logging handler that puts stdlib records into an :class:`ExecutionLogger` (same pipeline, same store).

    flocklog's own warnings about the pipeline (records carrying ``flocklog_internal``) are never fed back into
    it: a pipeline reporting its own trouble through itself would loop, or lose the report with the records.
    """

    def __init__(self, execution_logger: ExecutionLogger | None = None, level: int = logging.NOTSET, **options: Any):
        super().__init__(level)
        self.execution_logger = execution_logger or ExecutionLogger(options.pop("name", "logging"), **options)

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, INTERNAL, False):
            return
        try:
            fields: dict[str, Any] = {"module": record.module, "lineno": record.lineno, "func": record.funcName}
            if record.exc_info:
                fields["exc_text"] = logging.Formatter().formatException(record.exc_info)
            self.execution_logger.log(record.levelno, self.format(record), logger_name=record.name, **fields)
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.execution_logger.flush(timeout=self.execution_logger.drain_timeout)

    def close(self) -> None:
        self.execution_logger.close()
        super().close()
