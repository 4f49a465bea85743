"""The stdout sink: JSON lines on the hub's standard output, the container convention (a node agent ships them).

One process in the pod writes, so lines from many workers never interleave; the hub's own messages go to stderr.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
from typing import IO, Any

from flocklog.formatting import JSONFormatter
from flocklog.hub.sinks._base import SinkHandler


class StdoutHandler(SinkHandler):
    """Writes each record as one JSON line to standard output (or ``stream``), from its own sender thread.

    A reader that stops reading fills the pipe: the sender blocks, the hub does not; the queue then spills to the
    spool and the spool is written out, oldest first, once the reader drains the pipe again. The default
    formatter is a JSON-lines encoder; configure any other formatter in the hub's dictConfig as usual.
    """

    kind = "stdout"

    def __init__(self, level: int | str = logging.NOTSET, *, stream: IO[str] | None = None, **options: Any) -> None:
        self.stream = stream  # before the base starts a sender for a predecessor's spool
        super().__init__(level, **options)
        self.setFormatter(JSONFormatter())  # the container convention: one JSON object per line

    def prepare(self, record: logging.LogRecord) -> Any:
        return self.format(record).replace("\n", "\\n") + "\n"

    def deliver(self, items: list[Any]) -> None:
        data = "".join(items)
        if self.stream is not None:
            self.stream.write(data)
            self.stream.flush()
            return
        raw = data.encode("utf-8", errors="backslashreplace")
        try:
            fd = sys.stdout.fileno()
        except (AttributeError, ValueError, OSError):  # stdout replaced (captured, closed): the real one
            fd = 1
        view = memoryview(raw)
        while view:
            n = os.write(fd, view)
            view = view[n:]


def stdout_config(config: dict[str, Any] | None = None, *, level: str = "NOTSET") -> dict[str, Any]:
    """A hub dictConfig that also (or only, if ``config`` is None) writes JSON lines to stdout: ``serve --stdout``.

    The handler is named ``stdout``; a config that already has a handler of that name keeps it.
    """
    cfg: dict[str, Any] = copy.deepcopy(config) if config else {"version": 1}
    cfg.setdefault("version", 1)
    handlers = cfg.setdefault("handlers", {})
    handlers.setdefault("stdout", {"class": "flocklog.hub.sinks.StdoutHandler", "level": level})
    root = cfg.setdefault("root", {})
    root.setdefault("level", "DEBUG")
    names = root.setdefault("handlers", [])
    if "stdout" not in names:
        names.append("stdout")
    return cfg
