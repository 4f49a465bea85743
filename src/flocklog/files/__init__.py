"""Safe rotating files: drop-in stdlib handlers that any number of processes can share."""

from flocklog.files.handlers import (
    ConcurrentRotatingFileHandler,
    ConcurrentTimedRotatingFileHandler,
    LogDirectoryNotFoundError,
    RotatingFileHandler,
    TimedRotatingFileHandler,
)

__all__ = [
    "ConcurrentRotatingFileHandler",
    "ConcurrentTimedRotatingFileHandler",
    "LogDirectoryNotFoundError",
    "RotatingFileHandler",
    "TimedRotatingFileHandler",
]
