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

Shared state: the adopter's own thread only (``poll``); ``stop`` just sets an event.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from pathlib import Path
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from flocklog._pipelinesettings import resolve_spool_dir
from flocklog._proc import pid_alive
from flocklog.pipeline.deadletter import dead_letter_dir
from flocklog.pipeline.spool import SpoolTransport
from flocklog.pipeline.transports import CeleryTransport, replay_spool

__all__ = ["ADOPT_INTERVAL", "SpoolAdopter", "adopt_spools_enabled"]

#: Seconds between two looks at the spool directory: the bound on how long an abandoned batch waits.
ADOPT_INTERVAL = 2.0
_log = logging.getLogger("flocklog")


def adopt_spools_enabled() -> bool:
    """``$FLOCKLOG_ADOPT_SPOOLS`` (default on); ``0``/``false``/``no``/``off`` turns adoption off."""
    return os.environ.get("FLOCKLOG_ADOPT_SPOOLS", "1").strip().lower() not in ("0", "false", "no", "off")


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
        try:
            before = self.counts["already_confirmed"]
            sent = replay_spool(spool, transport, counts=self.counts)
        finally:
            transport.close()
        self.counts["adopted"] += sent
        confirmed = self.counts["already_confirmed"] - before
        if sent or confirmed:
            _log.warning(
                "flocklog worker: adopted the spool of exited producers in %s: %d records resent, "
                "%d already committed (deleted)",
                self.spool_dir,
                sent,
                confirmed,
            )
        return sent

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception as exc:  # never the worker's end: the spool keeps the batches for the next look
                self.counts["errors"] += 1
                _log.warning("flocklog worker: spool adoption from %s failed: %s; retrying", self.spool_dir, exc)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """At the worker's shutdown; a replay under way finishes or releases its file (never lost)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)


_adopters: list[SpoolAdopter] = []


@worker_ready.connect
def _adopt_abandoned_spools(sender: Any = None, **_: Any) -> None:
    """In the worker's main process (where ``worker_ready`` fires), once the consumer takes batches."""
    app = getattr(sender, "app", None)
    if app is None or not app.conf.get("flocklog_adopt_spools") or not adopt_spools_enabled():
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
