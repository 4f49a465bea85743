"""Safe rotating files: drop-in stdlib handlers that any number of processes can share."""

from flocklog.files.handlers import (
    ConcurrentRotatingFileHandler,
    ConcurrentTimedRotatingFileHandler,
    RotatingFileHandler,
    TimedRotatingFileHandler,
)

__all__ = [
    "ConcurrentRotatingFileHandler",
    "ConcurrentTimedRotatingFileHandler",
    "RotatingFileHandler",
    "TimedRotatingFileHandler",
]
