"""The local spool: durable batches on disk, one JSON-lines file per batch, named so replay keeps order.

A file's name is ``<ns time>-<pid>-<seq>[-<batch id>].batch``: nanosecond time and a sequence sort in creation
order; the batch id (when the batch has one) is the id its Celery task carries, so a replay can ask the broker
whether the worker already confirmed it (a receipt) and delete it instead of sending it again. A replaying
process claims a file by renaming it, so two replayers never send one batch twice.

Threads: ``send`` may be called by the logger's callers (a full buffer spills) and by its sender at once; each
call writes its own file (the sequence is an ``itertools.count``, atomic under the GIL), so no lock is needed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from flocklog._pipelinesettings import resolve_spool_dir
from flocklog._proc import pid_alive
from flocklog.errors import ConfigError, PipelineError
from flocklog.record import ExecutionRecord

__all__ = ["SpoolTransport"]

_decode = json.JSONDecoder().decode  # json.loads(text) without its per-call argument handling
_encode = json.JSONEncoder().encode  # json.dumps(value), likewise


class SpoolTransport:
    """Durable batches on local disk: each written to a temp name and renamed, so a reader never sees half."""

    name = "spool"

    def __init__(self, spool_dir: str | os.PathLike[str] | None = None) -> None:
        self.directory = resolve_spool_dir(spool_dir)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"spool directory {self.directory} cannot be created: {exc}") from exc
        self._seq = itertools.count(1)

    def send(self, records: Sequence[ExecutionRecord], batch_id: str | None = None, *, fsync: bool = True) -> None:
        """Write one batch file. On any error (ENOSPC...) nothing is left behind and the error is raised: the
        caller still holds the records and decides. ``fsync=False`` (a spill from a full buffer) survives the
        process being killed, but not the machine losing power."""
        stem = f"{time.time_ns():020d}-{os.getpid()}-{next(self._seq):06d}"
        if batch_id:
            stem += f"-{batch_id}"
        tmp = self.directory / f".{stem}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write("".join([_encode(record.to_wire()) + "\n" for record in records]))
                handle.flush()
                if fsync:
                    os.fsync(handle.fileno())
            os.replace(tmp, self.directory / f"{stem}.batch")
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    @staticmethod
    def batch_id_of(path: Path) -> str | None:
        """The batch id in a spool file's name (``None`` for a batch that never had one, or an old file)."""
        parts = path.name.split(".", 1)[0].split("-")
        return parts[3] if len(parts) == 4 and parts[3] else None

    def pending(self) -> list[Path]:
        return sorted(self.directory.glob("*.batch"))

    def backlog(self) -> tuple[int, int]:
        """(batch files, records) waiting in the spool."""
        files = self.pending()
        records = 0
        for path in files:
            try:
                with open(path, "rb") as handle:
                    records += sum(1 for _ in handle)
            except FileNotFoundError:
                continue
        return len(files), records

    def claim(self) -> Iterator[tuple[Path, list[ExecutionRecord]]]:
        """Yield claimed batches oldest first; the caller calls :meth:`done` or :meth:`release` for each."""
        for path in self.pending():
            claimed = path.with_suffix(f".claimed-{os.getpid()}")
            try:
                os.rename(path, claimed)
            except FileNotFoundError:
                continue  # another replayer took it
            try:
                records = ExecutionRecord.from_wire_many([_decode(line) for line in claimed.read_text().splitlines()])
            except (ValueError, PipelineError) as exc:
                bad = claimed.with_suffix(".corrupt")
                os.rename(claimed, bad)
                os.write(2, f"flocklog: spool file {bad} is unreadable ({exc}); kept aside\n".encode())
                continue
            yield claimed, records

    @staticmethod
    def done(claimed: Path) -> None:
        claimed.unlink(missing_ok=True)

    @staticmethod
    def release(claimed: Path) -> None:
        name = claimed.name.rsplit(".claimed-", 1)[0] + ".batch"
        os.rename(claimed, claimed.with_name(name))

    def recover_orphans(self) -> None:
        """Batches claimed by a process that died mid-replay go back in line."""
        for path in self.directory.glob("*.claimed-*"):
            try:
                pid = int(path.name.rsplit("-", 1)[1])
            except ValueError:
                continue
            if pid != os.getpid() and not pid_alive(pid):
                with contextlib.suppress(FileNotFoundError):  # another replayer put it back first
                    self.release(path)

    def close(self) -> None:
        pass
