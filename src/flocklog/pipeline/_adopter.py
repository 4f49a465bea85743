"""The worker's spool adopter: batches left in the spool by producers that exited are replayed without anyone.

Why in the worker: a producer that exits normally while the broker is down leaves its unconfirmed batches in its
spool, and only a producer running again on that directory (or ``flocklog spool replay`` by hand) would send
them; after a broker restart without persistence nobody else holds a copy. A worker on the same host sees the
same directory, so its main process looks at it every ``interval`` seconds and, when a spool file belongs to a
dead process, runs the ordinary :func:`~flocklog.pipeline.transports.replay_spool` through the Celery
transport: batches whose receipt says they were committed are deleted, the rest are resent (files are claimed
by a rename, so a producer replaying at the same moment never sends a batch twice; a resend is harmless anyway).

Started by the worker's ``worker_ready`` signal (Celery imports this module at start, see ``make_celery_app``),
stopped at ``worker_shutdown``. Off with ``$FLOCKLOG_ADOPT_SPOOLS=0`` (``flocklog worker --no-adopt-spools``).

Its counters (spool files adopted, records replayed, records already committed, failures and the last error) are
in :meth:`SpoolAdopter.stats` and, since ``flocklog status`` runs in another process, in a small JSON file beside
the spool directory (``.<spool dir name>.adopter-<pid>.json``, rewritten by a rename after each change, removed
at shutdown): :func:`adopter_status` sums those of the adopters alive on this host. Each failure is also a warning
on the ``flocklog`` logger.

Shared state: the adopter's own thread only (``poll``, the counters, the stats file); ``stop`` sets an event,
``stats`` copies the counters (a Counter copy under the GIL).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from flocklog._pipelinesettings import resolve_spool_dir
from flocklog._proc import pid_alive
from flocklog.pipeline.deadletter import dead_letter_dir
from flocklog.pipeline.spool import SpoolTransport
from flocklog.pipeline.transports import CeleryTransport, replay_spool

__all__ = ["ADOPT_INTERVAL", "COUNTERS", "SpoolAdopter", "adopter_status", "stats_path"]

#: Seconds between two looks at the spool directory: the bound on how long an abandoned batch waits.
ADOPT_INTERVAL = 2.0
#: The adopter's counters, as ``stats()`` and ``flocklog status`` (prefixed ``adopter_``) name them.
COUNTERS = ("adoptions", "adopted_spools", "records_replayed", "already_committed", "failures")
_log = logging.getLogger("flocklog")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def stats_path(spool_dir: Path, pid: int) -> Path:
    """Where the adopter of process ``pid`` keeps its counters: beside the spool, so the spool itself holds only
    batches (``flocklog status`` and the tests read an empty spool directory as "nothing unconfirmed")."""
    return spool_dir.parent / f".{spool_dir.name}.adopter-{pid}.json"


def _adopter_pid(path: Path) -> int | None:
    """The pid in a counters file's name (``.<spool>.adopter-<pid>.json``, or its ``....json.<random>.tmp``)."""
    try:
        return int(path.name.rsplit(".adopter-", 1)[1].split(".", 1)[0])
    except (IndexError, ValueError):
        return None


def _stats_files(spool_dir: Path, pattern: str = "*.json") -> list[tuple[int, Path]]:
    """(pid, path) of the counters files beside ``spool_dir`` (``pattern``: what follows ``adopter-``)."""
    found = []
    for path in spool_dir.parent.glob(f".{spool_dir.name}.adopter-{pattern}"):
        pid = _adopter_pid(path)
        if pid is not None:
            found.append((pid, path))
    return found


def _owner(path: Path) -> int | None:
    """The pid in a spool file's name: ``<time>-<pid>-...batch`` or ``....claimed-<pid>``."""
    try:
        if ".claimed-" in path.name:
            return int(path.name.rsplit("-", 1)[1])
        return int(path.name.split("-")[1])
    except (IndexError, ValueError):
        return None


class SpoolAdopter:
    """Replays ``spool_dir`` into the broker at ``broker_url`` whenever a file of a dead process waits there."""

    def __init__(self, spool_dir: Path, broker_url: str, *, interval: float = ADOPT_INTERVAL) -> None:
        self.spool_dir = spool_dir
        self.broker_url = broker_url
        self.interval = interval
        self.counts: collections.Counter[str] = collections.Counter()
        self.last_error: str | None = None
        self.last_error_at: str | None = None
        self.last_adoption_at: str | None = None
        self.started_at = _now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flocklog-spool-adopter", daemon=True)

    def orphaned(self) -> bool:
        """True if some spool file (waiting or half-replayed) belongs to a process that is gone."""
        if not self.spool_dir.is_dir():  # nothing was ever spooled here; do not create the directory
            return False
        for path in [*self.spool_dir.glob("*.batch"), *self.spool_dir.glob("*.claimed-*")]:
            pid = _owner(path)
            if pid is not None and pid != os.getpid() and not pid_alive(pid):
                return True
        return False

    def poll(self) -> int:
        """One look; returns the records handed to the broker. Raises what the replay raised (the broker is
        down): the files stay in the spool for the next look."""
        if not self.orphaned():
            return 0
        spool = SpoolTransport(self.spool_dir)
        transport = CeleryTransport(self.broker_url)
        replay: collections.Counter[str] = collections.Counter()
        try:
            sent = replay_spool(spool, transport, counts=replay)
        finally:
            transport.close()
            self._count(replay)  # what was placed before a failure counts too
        confirmed = replay["already_confirmed"]
        if sent or confirmed:
            _log.warning(
                "flocklog worker: adopted the spool of exited producers in %s: %d records resent, "
                "%d already committed (deleted)",
                self.spool_dir,
                sent,
                confirmed,
            )
        return sent

    def _count(self, replay: collections.Counter[str]) -> None:
        spools = replay["batches_replayed"] + replay["batches_already_confirmed"]
        if not spools:
            return
        self.counts["adoptions"] += 1
        self.counts["adopted_spools"] += spools
        self.counts["records_replayed"] += replay["replayed"]
        self.counts["already_committed"] += replay["already_confirmed"]
        self.last_adoption_at = _now()
        self._save()

    def _fail(self, exc: BaseException) -> None:
        self.counts["failures"] += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.last_error_at = _now()
        _log.warning(
            "flocklog worker: spool adoption from %s failed (%d failures so far): %s; the batches stay in the "
            "spool, retrying in %g s",
            self.spool_dir,
            self.counts["failures"],
            self.last_error,
            self.interval,
        )
        self._save()

    def stats(self) -> dict[str, Any]:
        """The counters (:data:`COUNTERS`), the last error and when it happened, the last adoption's time."""
        counts = self.counts.copy()
        data: dict[str, Any] = {name: counts[name] for name in COUNTERS}
        data.update(
            last_error=self.last_error,
            last_error_at=self.last_error_at,
            last_adoption_at=self.last_adoption_at,
            started_at=self.started_at,
            spool_dir=str(self.spool_dir),
            pid=os.getpid(),
        )
        return data

    def _save(self) -> None:
        """Publish ``stats()`` for ``flocklog status`` (temp file + rename: a reader never sees half). A failure
        here is one more warning, never the adopter's end: the counters stay in ``stats()``."""
        path = stats_path(self.spool_dir, os.getpid())
        try:
            # A fresh O_EXCL name, never a fixed one: the spool may sit in a shared directory such as /tmp, where
            # another user could plant a symlink at a predictable temp name; the rename replaces, never follows.
            fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    out.write(json.dumps(self.stats()))
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            _log.warning("flocklog worker: could not write the spool adopter's counters to %s: %s", path, exc)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception as exc:  # never the worker's end: the spool keeps the batches for the next look
                self._fail(exc)

    def start(self) -> None:
        # Counters of adopters that are gone (a SIGKILLed worker), and temp files of one killed mid-write.
        for pid, path in _stats_files(self.spool_dir) + _stats_files(self.spool_dir, "*.json.*.tmp"):
            if pid != os.getpid() and not pid_alive(pid):
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
        self._save()  # "running, nothing adopted yet" is worth seeing in status too
        self._thread.start()

    def stop(self) -> None:
        """At the worker's shutdown; a replay under way finishes or releases its file (never lost)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        stats_path(self.spool_dir, os.getpid()).unlink(missing_ok=True)


def adopter_status(spool_dir: Path) -> dict[str, Any]:
    """What ``flocklog status`` shows of the adopters running on ``spool_dir`` (in this host's workers): the
    counters summed, the latest error and adoption. ``adopter: none running`` when no live worker publishes any."""
    reports = []
    for pid, path in _stats_files(spool_dir):
        if not pid_alive(pid):
            continue
        try:
            if hasattr(os, "getuid") and path.lstat().st_uid != os.getuid():  # planted by another user: not ours
                continue
            reports.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):  # being replaced this instant, or gone: the next status sees it
            continue
    if not reports:
        return {"adopter": "none running on this spool directory"}
    data: dict[str, Any] = {"adopter": "running in pid " + ", ".join(str(r.get("pid")) for r in reports)}
    for name in COUNTERS:
        data[f"adopter_{name}"] = sum(int(r.get(name) or 0) for r in reports)
    failed = [r for r in reports if r.get("last_error_at")]
    latest = max(failed, key=lambda r: str(r["last_error_at"])) if failed else None
    data["adopter_last_error"] = f"{latest['last_error_at']} {latest['last_error']}" if latest else None
    adopted = [str(r["last_adoption_at"]) for r in reports if r.get("last_adoption_at")]
    data["adopter_last_adoption"] = max(adopted) if adopted else None
    return data


_adopters: list[SpoolAdopter] = []


@worker_ready.connect
def _adopt_abandoned_spools(sender: Any = None, **_: Any) -> None:
    """In the worker's main process (where ``worker_ready`` fires), once the consumer takes batches."""
    app = getattr(sender, "app", None)
    if app is None or not app.conf.get("flocklog_adopt_spools"):
        return
    spool_dir = resolve_spool_dir(None).resolve()
    if spool_dir == dead_letter_dir().resolve():
        return  # dead letters wait for the database and a human, not for a resend every few seconds
    adopter = SpoolAdopter(spool_dir, str(app.conf.broker_url))
    adopter.start()
    _adopters.append(adopter)


@worker_shutdown.connect
def _stop_adopting(**_: Any) -> None:
    while _adopters:
        _adopters.pop().stop()
