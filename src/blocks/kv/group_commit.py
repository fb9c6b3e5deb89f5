"""Group commit: many writers, one ``fsync``.

Theory of operation: every write gets a sequence number when its bytes reach the file (under
the store's lock). A writer that must not return before its bytes are durable calls
``wait_durable(seq)``. The first such writer to find no sync in flight becomes the *leader*:
lingers up to ``delay_s`` (or until ``batch_max`` writers are waiting), but only while other
writers are between ``begin_write`` and ``wait_durable``, i.e. about to join; a lone writer
never waits for company that is not coming. Then the leader asks the store for a snapshot ``(fd, last_seq)`` of the active
file, fsyncs it *outside* every lock, and publishes ``synced_seq = last_seq``, waking every
writer whose sequence number is covered. Writers that arrive while a sync is in flight wait
for the next one, which one of them leads.

With ``delay_s = 0`` this is plain ``sync=always``, except that writers racing each other
share an fsync instead of queueing for one each; with a positive delay it is ``sync=batch``:
an acknowledged write is durable, and the price is at most ``delay_s`` of extra latency.

The snapshot's fd is a ``dup`` of the active file's descriptor, so the store may rotate or
close its own descriptor meanwhile; the store fsyncs a file before rotating away from it, so
every sequence number below the snapshot's is durable once the snapshot's fd is.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from blocks.core.errors import InvalidArgument

__all__ = ["GroupCommit"]

BATCH_DELAY_S_MAX = 1.0
"""Longest linger a leader may be configured with: the bound on batch-mode latency."""


class GroupCommit:
    """Coordinates fsyncs for one store; thread-safe."""

    __slots__ = (
        "_batch_max",
        "_condition",
        "_delay_s",
        "_snapshot",
        "_starting",
        "_synced_seq",
        "_syncing",
        "_waiting",
        "fsync_count",
    )

    def __init__(
        self,
        snapshot: Callable[[], tuple[int, int]],
        *,
        delay_s: float,
        batch_max: int,
    ) -> None:
        """``snapshot()`` returns ``(dup'ed fd, last written seq)``; we close the fd."""
        if not 0.0 <= delay_s <= BATCH_DELAY_S_MAX:
            raise InvalidArgument(f"batch delay must be in [0, {BATCH_DELAY_S_MAX}] s")
        if batch_max < 1:
            raise InvalidArgument("batch_max must be >= 1")
        self._snapshot = snapshot
        self._delay_s = delay_s
        self._batch_max = batch_max
        self._condition = threading.Condition(threading.Lock())
        self._synced_seq = 0
        self._syncing = False
        self._waiting = 0
        self._starting = 0  # writers that called begin_write and not yet wait_durable
        self.fsync_count = 0

    def begin_write(self) -> None:
        """Announce a write that will call ``wait_durable`` next (lets a leader linger)."""
        with self._condition:
            self._starting += 1

    def abandon_write(self) -> None:
        """Undo ``begin_write`` for a write that failed before reaching ``wait_durable``."""
        with self._condition:
            self._starting -= 1
            self._condition.notify_all()

    def mark_durable(self, seq: int) -> None:
        """Record that everything up to ``seq`` is durable by other means (rotation, close)."""
        with self._condition:
            if seq > self._synced_seq:
                self._synced_seq = seq
                self._condition.notify_all()

    def wait_durable(self, seq: int) -> None:
        """Return once every write numbered ``<= seq`` is on stable storage."""
        with self._condition:
            self._starting -= 1
            self._waiting += 1
            self._condition.notify_all()  # a lingering leader may want to count us
            try:
                while self._synced_seq < seq:
                    if self._syncing:
                        self._condition.wait()
                        continue
                    self._lead()
            finally:
                self._waiting -= 1

    def _linger(self) -> None:
        """Wait (condition held) while writers are about to join and the delay lasts."""
        if self._delay_s <= 0:
            return
        deadline = time.monotonic() + self._delay_s
        while self._starting > 0 and self._waiting < self._batch_max:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._condition.wait(remaining)

    def _lead(self) -> None:
        """Run one fsync for everyone; called and returns with the condition held."""
        self._syncing = True
        try:
            self._linger()
            self._condition.release()
            try:
                fd, last_seq = self._snapshot()
                try:
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
            finally:
                self._condition.acquire()
            self.fsync_count += 1
            self._synced_seq = max(self._synced_seq, last_seq)
        finally:
            self._syncing = False
            self._condition.notify_all()
