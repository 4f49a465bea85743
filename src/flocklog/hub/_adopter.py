"""``flocklog serve``'s own spool adopter: spools left by writers that exited are replayed into this hub promptly.

Why in serve too: a client adopts orphaned spools when it starts, but after the last writer of a host exited (or
crashed) with records spooled, no client may ever start there again, and those records waited for nobody. serve
looks at the spool directory every ``interval`` seconds; when it finds spool files of dead processes it starts a
plain :class:`HubHandler` on its own address, whose sender claims them (a rename, so a client adopting at the
same moment never replays a file twice) and replays them through the normal path (acks, durable offset,
de-duplication), then closes it.

Shared state: serve's main thread only (``poll`` and ``close``); the handler has its own threads.
"""

from __future__ import annotations

import time
from pathlib import Path

from flocklog.hub._spool import Spool
from flocklog.hub.client import HubHandler

_REPLAY_TIMEOUT = 300.0


def _quiet(key: str, message: str) -> None:
    """The probe only lists files; a refused directory is said by the handler that would use it."""


class SpoolAdopter:
    """Replays the spools of exited writers in ``spool_dir`` into the hub at ``address``."""

    def __init__(self, address: str, secret: str | None, spool_dir: str, *, interval: float = 1.0) -> None:
        self.address = address
        self.secret = secret
        self.spool_dir = Path(spool_dir)
        self.interval = interval
        self.adopted = 0
        self._probe = Spool(self.spool_dir, pid=0, cid="serve-probe", warn=_quiet)
        self._handler: HubHandler | None = None
        self._started = 0.0
        self._next = 0.0

    def poll(self) -> None:
        """One look: finish a replay that is done, or start one if abandoned spools are waiting."""
        now = time.monotonic()
        handler = self._handler
        if handler is not None:
            stats = handler.stats()
            claimed = stats["adopted_spools"] > 0 or now - self._started > 5.0
            if (claimed and stats["pending_spools"] == 0) or now - self._started > _REPLAY_TIMEOUT:
                self.adopted += stats["adopted_spools"]
                self._close()
            return
        if now < self._next:
            return
        self._next = now + self.interval
        if self._probe.orphans():
            self._started = now
            self._handler = HubHandler(
                self.address,
                secret=self.secret,
                spool_dir=self.spool_dir,
                adopt_orphans=True,
                handle_sigterm=False,
                retry_interval=0.2,
            )

    def _close(self) -> None:
        handler, self._handler = self._handler, None
        if handler is not None:
            handler.close()

    def close(self) -> None:
        """At serve's stop: whatever is not replayed yet stays in (or goes back to) the spool, never lost."""
        self._close()
