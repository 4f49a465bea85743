"""The worker's dead letters: where a batch goes when its retries are used up, and a refused record for good.

Two kinds of file in one directory (``$FLOCKLOG_DEAD_LETTER_DIR``, default ``.flocklog/dead-letter``):

- ``*.batch``: a whole batch the database could not take within the retries. Same format as the producer's
  spool, so ``flocklog spool replay --spool-dir <dead-letter dir>`` delivers it once the database is back.
- ``*.refused``: one JSON object per line, ``{"reason": ..., "record": ...}``, for each record the database
  refused on its own (a NUL byte, a lone surrogate) or that was not shaped like a record at all. No store can
  hold these as they are; they are kept so nothing is lost silently, and ``replay`` leaves them alone.

Every file is written to a temp name, fsynced and renamed, and every parking says so in one line on stderr
(the worker's log), with a count.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flocklog.pipeline.record import ExecutionRecord

DEFAULT_DEAD_LETTER_DIR = ".flocklog/dead-letter"
_seq = 0
_seq_lock = threading.Lock()


def dead_letter_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """The explicit directory, else ``$FLOCKLOG_DEAD_LETTER_DIR``, else ``.flocklog/dead-letter``."""
    return Path(directory or os.environ.get("FLOCKLOG_DEAD_LETTER_DIR") or DEFAULT_DEAD_LETTER_DIR)


def _write(directory: Path, suffix: str, lines: list[str]) -> Path:
    global _seq
    with _seq_lock:
        _seq += 1
        seq = _seq
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{time.time_ns():020d}-{os.getpid()}-{seq:06d}"
    tmp = directory / f".{stem}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    final = directory / f"{stem}{suffix}"
    os.replace(tmp, final)
    return final


def _say(message: str) -> None:
    os.write(2, f"flocklog: {message}\n".encode("utf-8", "backslashreplace"))


def park_batch(
    records: Sequence[ExecutionRecord], reason: str, directory: str | os.PathLike[str] | None = None
) -> Path:
    """Keep a whole batch, replayable, after its last retry; raises OSError if the disk refuses it too."""
    path = _write(dead_letter_dir(directory), ".batch", [json.dumps(r.to_wire()) for r in records])
    _say(f"batch of {len(records)} records moved to dead-letter {path} after the last retry: {reason}")
    return path


def park_refused(
    refused: Sequence[tuple[ExecutionRecord | Any, str]], directory: str | os.PathLike[str] | None = None
) -> Path | None:
    """Keep records no store can hold, each with its reason (an ExecutionRecord, or the raw wire data)."""
    if not refused:
        return None
    lines = []
    for record, reason in refused:
        data = record.to_wire() if isinstance(record, ExecutionRecord) else record
        try:
            lines.append(json.dumps({"reason": reason, "record": data}))
        except (TypeError, ValueError, RecursionError):
            try:
                text = repr(data)
            except RecursionError:  # nested beyond what repr() walks: keep what identifies it
                text = f"<{type(data).__name__} nested too deep to write out>"
            lines.append(json.dumps({"reason": reason, "record": text}))
    path = _write(dead_letter_dir(directory), ".refused", lines)
    first = refused[0][1]
    _say(f"{len(refused)} record(s) refused by the store, kept in {path} (first reason: {first})")
    return path


def refused_records(directory: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Every ``{"reason", "record"}`` entry of the ``*.refused`` files, oldest first (for people and tests)."""
    entries: list[dict[str, Any]] = []
    for path in sorted(dead_letter_dir(directory).glob("*.refused")):
        with open(path, encoding="utf-8") as handle:
            entries += [json.loads(line) for line in handle if line.strip()]
    return entries


__all__ = ["DEFAULT_DEAD_LETTER_DIR", "dead_letter_dir", "park_batch", "park_refused", "refused_records"]
