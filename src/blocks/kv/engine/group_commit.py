"""Group commit: many writers, one write and one ``fsync``.

Theory of operation: a durable write is a *ticket* (its records, already encoded). The writer
``submit``s it under the store's lock, which appends it to the *pending* queue, and then
``wait``s outside the lock. The first writer to find no leader becomes the *leader*: it takes
the pending tickets as one batch and calls the store's ``prepare`` (lock held: where the
records go), ``write`` (no lock: one ``pwrite`` of every record, then one ``fdatasync``) and
``finish`` (lock held: the keydir learns the records). Then, in the same lock hold, it
opens the gate of every writer of the batch and, if tickets are pending, of the oldest one,
which leads the next batch. So a put costs one lock hold and one sleep; the leader makes two
system calls per batch, and the index never points at bytes that are not durable.

Writers that submit while a batch is in flight wait for the next one, which one of them
leads. Each parks on a lock of its own that the leader opens once: with a shared condition
variable every waiter woke and queued again for the lock.

**Lingering** (``sync=batch`` only). Without it, ``k`` writers in a loop split into two halves
that alternate: while one half's batch is written the other half queues, and the moment it
ends the queued half starts the next batch alone, before the half just released has come
back. So a batch leader waits for the *company* of the last batch: as many writers as were
waiting when it ended (the ones it released are about to come back with their next write),
until they are all pending, ``batch_max`` are, or ``delay_s`` passes. A lone writer's company
is itself, so it never waits; a writer that stops writing costs the next leader one delay. A
``sync=always`` leader (``delay_s`` 0) starts at once: the alternating halves keep the disk
busy with one half's fsync while the other half's writers run, which beat lingering for the
whole company in interleaved runs (docs/kv.md).

**Failure.** A batch whose ``prepare`` or ``write`` raises ``WriteFailed`` (the disk refused
the bytes; the store cut them back) fails its own writers only; the next batch may succeed.
A ``SyncFailed`` (the fsync failed) is remembered: every writer pending then or later gets
its ``OSError``, because the kernel may have dropped the pages it could not write and
reports that once, so a later fsync that succeeds proves nothing about them.

**Settling.** Rotation and close must not run under a batch the leader is writing outside
the lock: ``wait_settled`` (lock held) waits until no batch is in flight, and with
``drain=True`` until nothing is pending either (the caller refuses new submissions first).

Every bound is named: a batch holds at most ``batch_max`` tickets and, past its first,
``batch_bytes_max`` bytes; the pending queue holds at most one ticket per writer thread,
since every writer waits for its ticket before it can submit another.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import InvalidArgument

__all__ = ["GroupCommit", "SyncFailed", "Ticket", "WriteFailed"]

BATCH_DELAY_S_MAX = 1.0
"""Longest linger a leader may be configured with: the bound on batch-mode latency."""

W = TypeVar("W")
P = TypeVar("P")


class WriteFailed(Exception):
    """The batch's bytes were refused (``ENOSPC``, ``EIO``) and cut back; only its writers fail.

    ``doing`` names the step for the error message (e.g. ``"write"``).
    """

    def __init__(self, error: OSError, doing: str) -> None:
        super().__init__(error, doing)
        self.error = error
        self.doing = doing


class SyncFailed(Exception):
    """An fsync failed: the batch and every later one fail with ``error`` (see the module)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


class Ticket(Generic[W]):
    """One durable write: ``work`` (the store's records), then its outcome once done.

    ``result`` is the store's answer for the write (``prepare`` sets it; e.g. whether a
    delete found its key); ``error`` is what its waiter raises.
    """

    __slots__ = ("done", "error", "gate", "lead", "result", "size_bytes", "work")

    def __init__(self, work: W, size_bytes: int) -> None:
        self.work = work
        self.size_bytes = size_bytes
        self.done = False
        self.lead = False  # given the lead of the next batch (not done yet)
        self.result: object = None
        self.error: BaseException | None = None
        # Opened once per turn: when the ticket is given the lead, and when it is done. Its
        # waiter takes it back each time, so an opening is never lost or doubled.
        self.gate = threading.Lock()
        self.gate.acquire()


class GroupCommit(Generic[W, P]):
    """Coordinates the batches of one store; thread-safe under the store's ``lock``."""

    __slots__ = (
        "_arrivals",
        "_batch_bytes_max",
        "_batch_max",
        "_clock",
        "_company",
        "_delay_s",
        "_failure",
        "_finish",
        "_in_flight",
        "_leading",
        "_lingering",
        "_lock",
        "_pending",
        "_prepare",
        "_settle_waiters",
        "_settled",
        "_write",
        "batch_count",
    )

    def __init__(
        self,
        lock: Any,
        *,
        prepare: Callable[[list[Ticket[W]]], P],
        write: Callable[[P], None],
        finish: Callable[[P, bool], None],
        delay_s: float,
        batch_max: int,
        batch_bytes_max: int,
        clock: Clock | None = None,
    ) -> None:
        """The store's side of a batch, one batch at a time between ``prepare`` and ``finish``.

        ``lock`` is the store's (a ``threading.RLock``); ``prepare(batch)`` and
        ``finish(plan, ok)`` run with it held, ``write(plan)`` without it. ``prepare``
        decides where the records go and each ticket's ``result``, and may drop records
        (a delete of an absent key); ``write`` makes the plan's bytes durable; ``finish``
        applies a written plan (``ok``) or forgets a failed one. ``prepare`` and ``write``
        raise ``WriteFailed`` or ``SyncFailed`` (anything else fails the batch alone, as a
        ``WriteFailed`` does). ``clock`` (default: the system's) times a leader's linger; the
        wait itself is on the lock's condition, so a test clock shortens or ends a linger
        but does not stretch one past its real ``delay_s``.
        """
        if not 0.0 <= delay_s <= BATCH_DELAY_S_MAX:
            raise InvalidArgument(f"batch delay must be in [0, {BATCH_DELAY_S_MAX}] s")
        if batch_max < 1:
            raise InvalidArgument("batch_max must be >= 1")
        if batch_bytes_max < 1:
            raise InvalidArgument("batch_bytes_max must be >= 1")
        self._prepare = prepare
        self._write = write
        self._finish = finish
        self._lock = lock
        self._delay_s = delay_s
        self._batch_max = batch_max
        self._batch_bytes_max = batch_bytes_max
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._arrivals = threading.Condition(lock)  # a lingering leader waiting for company
        self._settled = threading.Condition(lock)  # rotation and close waiting for quiet
        self._settle_waiters = 0
        self._pending: list[Ticket[W]] = []  # submitted, not in a batch yet; oldest first
        self._leading = False  # a leader exists (running, or woken to run); pending => leading
        self._in_flight = False  # a batch is between prepare and finish
        self._lingering = False
        self._failure: OSError | None = None  # the first failed fsync: every later wait raises it
        self._company = 1  # writers waiting when the last batch ended, its leader included
        self.batch_count = 0  # batches written and synced

    def submit(self, ticket: Ticket[W]) -> None:
        """Queue ``ticket`` (store lock held); then call ``wait(ticket)`` without the lock.

        Raises the remembered ``OSError`` of a failed fsync: nothing is acknowledged after one.
        """
        if self._failure is not None:
            raise self._failure
        self._pending.append(ticket)
        if not self._leading:
            self._leading = True
            ticket.lead = True
            ticket.gate.release()
        elif self._lingering and not self._wants_company():
            self._arrivals.notify()

    def wait(self, ticket: Ticket[W]) -> object:
        """Return ``ticket``'s result once a batch that holds it is durable (lock not held).

        Raises what failed its batch (``WriteFailed``) or the ``OSError`` of a failed fsync.
        """
        while True:
            ticket.gate.acquire()  # opened when we are given the lead, and when we are done
            if ticket.done:
                if ticket.error is not None:
                    raise ticket.error
                return ticket.result
            assert ticket.lead, "a gate opens for the lead or for the end"
            ticket.lead = False
            self._lead(ticket)

    def wait_settled(self, *, drain: bool = False) -> None:
        """Wait (store lock held) until no batch is in flight; with ``drain``, until no
        ticket is pending either (the caller must refuse new submissions first)."""
        self._settle_waiters += 1
        try:
            while self._in_flight or (drain and self._leading):
                self._settled.wait()
        finally:
            self._settle_waiters -= 1

    def _lead(self, own: Ticket[W]) -> None:
        """Run one batch, starting with ``own`` (the oldest pending ticket)."""
        error: BaseException | None = None
        plan: P | None = None
        prepared = False
        with self._lock:
            self._linger()
            batch = self._take()
            assert batch[0] is own, "a leader's ticket is the oldest pending one"
            self._in_flight = True
            try:
                plan = self._prepare(batch)
                prepared = True
            except BaseException as failure:
                error = failure
        if prepared:
            try:
                self._write(plan)  # type: ignore[arg-type]  # prepared: plan is a P
            except BaseException as failure:
                error = failure
        with self._lock:
            try:
                if prepared:
                    self._finish(plan, error is None)  # type: ignore[arg-type]
            finally:
                self._end_batch(batch, error)

    def _take(self) -> list[Ticket[W]]:
        """The next batch: pending tickets in order, within the bounds; lock held."""
        pending = self._pending
        count = 1
        size_bytes = pending[0].size_bytes
        limit = min(len(pending), self._batch_max)
        while count < limit and size_bytes + pending[count].size_bytes <= self._batch_bytes_max:
            size_bytes += pending[count].size_bytes
            count += 1
        if count == len(pending):
            self._pending = []
            return pending
        batch = pending[:count]
        del pending[:count]
        return batch

    def _end_batch(self, batch: list[Ticket[W]], error: BaseException | None) -> None:
        """Finish every ticket of ``batch`` and pass the lead on; lock held."""
        self._in_flight = False
        if isinstance(error, SyncFailed):
            if self._failure is None:
                self._failure = error.error
            error = self._failure
        elif error is None:
            self.batch_count += 1
        self._company = len(batch) + len(self._pending)
        for ticket in batch:
            ticket.error = error
            ticket.done = True
            ticket.gate.release()
        pending = self._pending
        if pending and self._failure is not None:
            for ticket in pending:  # never acknowledged by a later fsync (module docs)
                ticket.error = self._failure
                ticket.done = True
                ticket.gate.release()
            self._pending = pending = []
        if pending:
            pending[0].lead = True
            pending[0].gate.release()
        else:
            self._leading = False
        if self._settle_waiters:
            self._settled.notify_all()

    def _linger(self) -> None:
        """Wait (lock held) for the writers that are about to join, within the bound."""
        if self._delay_s <= 0 or not self._wants_company():
            return
        monotonic = self._clock.monotonic
        deadline = monotonic() + self._delay_s
        self._lingering = True
        try:
            while self._wants_company():
                remaining = deadline - monotonic()
                if remaining <= 0:
                    return
                self._arrivals.wait(remaining)
        finally:
            self._lingering = False

    def _wants_company(self) -> bool:
        waiting = len(self._pending)
        return waiting < self._batch_max and waiting < self._company
