"""The HubHandler's record buffer: what ``emit()`` appends to, and the sender's share it cuts batches from.

Why two parts: emit() must never wait for a per-record loop, so the sender swaps the shared deque out whole (one
step under the mutex) and cuts batches from its own list with slices, ``accumulate`` and ``bisect``, all in C.
Every microsecond the sender spends in Python is one the emitting threads may wait for the GIL: a per-record loop
over a 512-record batch cost about 50 µs. A record is always in exactly one of ``buf``, the carry or the batch in
flight, so drain() and close() can never see it in none of them.

| field                              | owner thread                         | lock                     |
|------------------------------------|--------------------------------------|--------------------------|
| ``buf``                            | emit() appends, the sender swaps     | ``mutex``                |
| ``carry``, ``carry_pos``           | the sender; close() once it stopped  | ``mutex`` for the swap   |
| ``carry_len``, ``inflight``        | the sender writes, others read       | ``mutex`` when it matters|
| ``space``                          | ``when_full='block'`` waits on it    | ``mutex``                |
"""

from __future__ import annotations

import bisect
import collections
import itertools
import threading


class RecordBuffer:
    """Encoded records waiting for the sender, bounded by the handler's ``capacity``."""

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.space = threading.Condition(self.mutex)  # notified when a batch is done (room for blocked emits)
        self.buf: collections.deque[bytes] = collections.deque()  # emit() appends here (under mutex)
        # The sender's share, taken from buf whole; records before carry_pos have been sent. A list, so that a
        # batch is cut by slicing in C rather than a Python loop (see take_batch).
        self.carry: list[bytes] = []
        self.carry_pos = 0
        self.carry_len = 0
        self.inflight = 0

    def held(self) -> int:
        """Records not yet acked or spooled: buffered, in the sender's share, or in the batch being sent."""
        return len(self.buf) + self.carry_len + self.inflight

    def waiting(self) -> int:
        """Records not yet taken into a batch."""
        return len(self.buf) + self.carry_len

    def empty(self) -> bool:
        return not self.buf and not self.carry and not self.inflight

    def take_batch(self, batch_size: int, byte_limit: int) -> list[bytes]:
        """Next batch (sender thread): at most ``batch_size`` records whose frame fits ``byte_limit``."""
        if self.carry_pos >= len(self.carry):
            with self.mutex:  # in one step: drain() must never see these records in neither place
                self.carry, self.carry_pos = list(self.buf), 0
                self.carry_len = len(self.carry)
                self.buf = collections.deque()
        carry, start = self.carry, self.carry_pos
        chunk = carry[start : start + batch_size]
        # A record costs its bytes plus 8 of framing; keep the longest prefix whose total is within the limit.
        ends = list(itertools.accumulate(map(len, chunk)))
        count = len(chunk)
        if count and ends[-1] + 8 * count > byte_limit:
            count = bisect.bisect_right(range(count), byte_limit, key=lambda k: ends[k] + 8 * (k + 1))
            count = max(count, 1)  # one record of exactly the limit goes alone
            chunk = chunk[:count]
        self.inflight = count  # before the carry shrinks: drain() must never see the batch in neither place
        self.carry_pos = start + count
        if self.carry_pos >= len(carry):
            self.carry, self.carry_pos = [], 0
        self.carry_len = len(self.carry) - self.carry_pos
        return chunk

    def batch_done(self, *, notify: bool) -> None:
        with self.mutex:
            self.inflight = 0
            if notify:
                self.space.notify_all()

    def take_all_locked(self) -> list[bytes]:
        """Everything not sent, oldest first (close(), under ``mutex``, once the sender has stopped)."""
        leftovers = self.carry[self.carry_pos :] + list(self.buf)
        self.carry, self.carry_pos, self.carry_len = [], 0, 0
        self.buf.clear()
        return leftovers
