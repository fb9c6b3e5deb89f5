"""Group commit: many writers, one ``fsync``.

Theory of operation: every write gets a sequence number when its bytes reach the file (under
the store's lock). A writer that must not return before its bytes are durable calls
``wait_durable(seq)``. The first such writer to find no sync in flight becomes the *leader*:
under ``sync=batch`` it may linger a little for company (below), then asks the store for a snapshot
``(fd, last_seq)`` of the active file, fsyncs it *outside* every lock, and publishes
``synced_seq = last_seq``, waking every writer whose sequence number is covered. Writers that
arrive while a sync is in flight wait for the next one, which one of them leads.

**Lingering** (``sync=batch`` only). Without it, ``k`` writers in a loop split into two halves
that alternate: while one half's fsync runs the other half queues, and the moment it ends the
queued half starts the next fsync alone, before the half just released has come back. So a
batch leader waits for:

* writers between ``begin_write`` and ``wait_durable`` (appending right now), and
* the *company* of the last fsync: as many writers as were waiting when it ended (the ones it
  released are about to come back with their next write),

until they are all there, ``batch_max`` writers wait, or ``delay_s`` passes. A lone writer's
company is itself, so it never waits; a writer that stops writing costs the next leader one
delay. A ``sync=always`` leader (``delay_s`` 0) fsyncs at once: the alternating halves keep
the disk busy with one half's fsync while the other half's writers run, and in interleaved
runs that beat lingering for the whole company (which leaves the disk idle meanwhile) by
x1.56 (docs/kv.md).

**Waking.** A writer that finds a sync in flight parks on a lock of its own. When the sync
ends, the leader opens the gates of the writers it covered (counting them out itself, so they
return without taking the shared lock again) and of the oldest one it did not, which leads
next; the rest stay parked until that sync ends. With a shared condition variable every
waiter woke and queued again for the lock; this wakes each writer once.

**Failure.** A failed fsync is remembered: every later wait for a write it did not cover
raises the same error. The kernel may have dropped the pages it could not write and reports
that once, so a retried fsync that succeeds proves nothing about them.

Durability is the same either way: an acknowledged write is on stable storage. Only the
latency of a write (at most the delay) is traded.

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


class _Parked:
    """A writer asleep until a leader opens its gate; ``covered`` says whether to return."""

    __slots__ = ("covered", "gate", "seq")

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.covered = False
        self.gate = threading.Lock()
        self.gate.acquire()


class GroupCommit:
    """Coordinates fsyncs for one store; thread-safe."""

    __slots__ = (
        "_arrivals",
        "_batch_max",
        "_company",
        "_delay_s",
        "_failure",
        "_lingering",
        "_lock",
        "_parked",
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
        self._lock = threading.Lock()
        self._arrivals = threading.Condition(self._lock)  # a lingering leader waiting for company
        self._parked: list[_Parked] = []  # writers asleep while a sync runs, oldest first
        self._lingering = False
        self._synced_seq = 0
        self._syncing = False
        self._failure: OSError | None = None  # the first failed fsync: every later wait raises it
        self._waiting = 0  # writers inside wait_durable, the leader and the parked included
        self._starting = 0  # writers that called begin_write and not yet wait_durable
        self._company = 1  # writers waiting when the last fsync ended, the leader included
        self.fsync_count = 0

    def begin_write(self) -> None:
        """Announce a write that will call ``wait_durable`` next (lets a leader linger)."""
        with self._lock:
            self._starting += 1

    def abandon_write(self) -> None:
        """Undo ``begin_write`` for a write that failed before reaching ``wait_durable``."""
        with self._lock:
            self._starting -= 1
            self._maybe_call_leader()

    def mark_durable(self, seq: int) -> None:
        """Record that everything up to ``seq`` is durable by other means (rotation, close)."""
        with self._lock:
            if seq > self._synced_seq:
                self._synced_seq = seq
                self._release_covered()

    def wait_durable(self, seq: int) -> None:
        """Return once every write numbered ``<= seq`` is on stable storage.

        Raises the ``OSError`` of a failed fsync; once one failed, every later wait for a
        write it did not cover raises it too (a retried fsync may succeed without the lost
        pages, so it proves nothing).
        """
        lock = self._lock
        lock.acquire()
        self._starting -= 1
        self._waiting += 1
        self._maybe_call_leader()
        while True:  # lock held at the top of every turn
            if self._synced_seq >= seq:
                self._waiting -= 1
                if self._parked and not self._syncing:
                    self._release_covered()  # a woken would-be leader hands the turn on
                lock.release()
                return
            if self._failure is not None:
                self._waiting -= 1
                lock.release()
                raise self._failure
            if not self._syncing:
                try:
                    self._lead()
                except BaseException:
                    self._waiting -= 1
                    lock.release()
                    raise
                continue
            parked = _Parked(seq)
            self._parked.append(parked)
            lock.release()
            parked.gate.acquire()  # opened by a leader, who counted us out if covered
            if parked.covered:
                return
            lock.acquire()

    def _maybe_call_leader(self) -> None:
        """Wake a lingering leader once the company it waits for is complete; lock held."""
        if self._lingering and not self._wants_company():
            self._arrivals.notify()

    def _linger(self) -> None:
        """Wait (lock held) for the writers that are about to join, within the bound."""
        if self._delay_s <= 0 or not self._wants_company():
            return
        deadline = time.monotonic() + self._delay_s
        self._lingering = True
        try:
            while self._wants_company():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._arrivals.wait(remaining)
        finally:
            self._lingering = False

    def _wants_company(self) -> bool:
        if self._waiting >= self._batch_max:
            return False
        return self._starting > 0 or self._waiting < self._company

    def _lead(self) -> None:
        """Run one fsync for everyone; called and returns with the lock held."""
        self._syncing = True
        try:
            self._linger()
            self._lock.release()
            failure: OSError | None = None
            try:
                fd, last_seq = self._snapshot()
                try:
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
            except OSError as error:
                failure = error
            finally:
                self._lock.acquire()
            if failure is not None:
                if self._failure is None:
                    self._failure = failure
                raise failure
            self._company = self._waiting
            self.fsync_count += 1
            self._synced_seq = max(self._synced_seq, last_seq)
        finally:
            self._syncing = False
            self._release_covered()

    def _release_covered(self) -> None:
        """Open the gates of parked writers the synced prefix covers; lock held.

        Each covered writer is counted out here, so it returns without taking the lock
        again. If writers remain (or a fsync failed), the oldest is woken to lead the next
        sync (or to raise); the rest stay parked until that one's sync ends.
        """
        if not self._parked or self._syncing:
            return
        synced = self._synced_seq
        remaining: list[_Parked] = []
        for parked in self._parked:
            if parked.seq <= synced:
                parked.covered = True
                self._waiting -= 1
                parked.gate.release()
            else:
                remaining.append(parked)
        if remaining:
            if self._failure is not None:
                for parked in remaining:
                    parked.gate.release()
                remaining = []
            else:
                remaining.pop(0).gate.release()
        self._parked = remaining
