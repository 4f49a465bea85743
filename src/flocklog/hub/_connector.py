"""The HubHandler's connector: connections are made (and greeted) on a helper thread, never on the sender.

Why a thread of its own: a hub that accepts and never greets held the sender for the whole connect timeout per
attempt while the buffer overflowed (48% dropped at 5k records/s per writer). Here the sender starts an attempt
and waits for it only while its buffer has room; meanwhile it spools. The finished session (or the failure) is
picked up by the sender with :meth:`Connector.take`.

| field                                      | owner thread                       | lock                 |
|--------------------------------------------|------------------------------------|----------------------|
| ``_ready``, ``failures``, ``auth_refused`` | written by the attempt thread      | ``_lock``            |
| ``_thread``                                | the sender (starts and reaps it)   | ``_lock`` (the reap) |
| ``connected``                              | attempt thread sets, sender clears | an Event             |
| ``next_attempt``                           | attempt thread and sender          | ``_lock`` (attempt)  |
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

from flocklog.errors import FrameError, HubError
from flocklog.hub._address import Address
from flocklog.hub._session import ClientSession, DowngradeError


class Connector:
    """One connection attempt at a time to ``address``, each on a short-lived thread."""

    def __init__(
        self,
        address: Address,
        secret: bytes | None,
        *,
        connect_timeout: float,
        retry_interval: float,
        warn: Callable[[str, str], None],
        spool_dir: Callable[[], Path],
        wake: threading.Event,
    ) -> None:
        self.address = address
        self.secret = secret
        self.connect_timeout = connect_timeout
        self.retry_interval = retry_interval
        self._warn = warn
        self._spool_dir = spool_dir
        self._wake = wake
        self._lock = threading.Lock()
        self.connected = threading.Event()  # set when an attempt ends, well or badly
        self._thread: threading.Thread | None = None
        self._ready: ClientSession | None = None
        self.failures = 0
        self.auth_refused = 0
        self.next_attempt = 0.0

    @property
    def busy(self) -> bool:
        return self._thread is not None

    def start(self, deadline: float) -> None:
        """Begin an attempt unless one is running or the last failure is too recent (sender thread)."""
        now = time.monotonic()
        if self._thread is not None or now < self.next_attempt or now >= deadline:
            return
        self.connected.clear()
        self._thread = threading.Thread(
            target=self._attempt, args=(deadline,), name="flocklog-hub-connect", daemon=True
        )
        self._thread.start()

    def take(self) -> ClientSession | None:
        """The session an attempt made, if any; reaps a finished attempt thread (sender thread)."""
        with self._lock:
            session, self._ready = self._ready, None
            if self._thread is not None and not self._thread.is_alive():
                self._thread = None
        return session

    def retry_after(self, delay: float) -> None:
        """After a session was lost: the next attempt may start in ``delay`` seconds."""
        self.next_attempt = time.monotonic() + delay

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self.failures, self.auth_refused

    def close(self) -> None:
        """Close a session that was made and never taken."""
        session = self.take()
        if session is not None:
            session.close()

    def forget(self) -> None:
        """In a forked child: the parent's ready socket is not ours to use."""
        ready = self._ready
        if ready is not None:
            with contextlib.suppress(OSError):
                ready.sock.close()

    def _failed(self, key: str, message: str, *, auth: bool = False) -> None:
        with self._lock:
            if auth:
                self.auth_refused += 1
            else:
                self.failures += 1
            self.next_attempt = time.monotonic() + self.retry_interval
        self._warn(key, message)

    def _attempt(self, deadline: float) -> None:
        """The attempt thread: one try; the sender picks the session (or the failure) up when it looks."""
        timeout = max(0.05, min(self.connect_timeout, deadline - time.monotonic()))
        try:
            session = ClientSession(self.address, self.secret, timeout)
        except DowngradeError as exc:
            self._failed("downgrade", f"flocklog HubHandler: {exc}", auth=True)
        except (HubError, FrameError, OSError) as exc:
            self._failed("connect", f"flocklog HubHandler: hub unreachable, spooling to {self._spool_dir()}: {exc}")
        except Exception as exc:  # never silent, never raised into the application
            self._failed("connect", f"flocklog HubHandler: cannot connect ({type(exc).__name__}: {exc})")
        else:
            with self._lock:
                self._ready = session
        finally:
            self.connected.set()
            self._wake.set()
