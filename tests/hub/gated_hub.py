"""A hub whose writer waits in its first chunk until a file appears: test_group_commit_crash's group forms behind it."""

import logging
import sys
import threading
import time
from pathlib import Path

import flocklog
from flocklog.hub import start_hub


class Gate(logging.Handler):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = Path(path)
        self.n = 0

    def emit_batch(self, records: list[logging.LogRecord]) -> None:
        self.n += 1
        if self.n == 1:
            while not self.path.exists():
                time.sleep(0.01)

    def emit(self, record: logging.LogRecord) -> None:
        self.emit_batch([record])


log, state, gate, address_file = sys.argv[1:5]
fh = flocklog.RotatingFileHandler(log)
fh.setFormatter(logging.Formatter("%(message)s"))
hub = start_hub([Gate(gate), fh], state_path=state)
Path(address_file).write_text(hub.address)
threading.Event().wait()
