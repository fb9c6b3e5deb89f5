"""One node's application of the replicated queue's committed log, and the wait for it.

Theory of operation. Every node applies the committed records of the log (``LOG_TOPIC``,
partition 0) in offset order to its own ``QueueMachine`` (``apply_committed``), whenever the
high watermark moves and before a call is answered: only records below the high watermark,
since a later leader may truncate any other. A record is taken from the log broker's recent
batch when it was written here lately, else read from the store, ``APPLY_BATCH`` at a time.
A record that this node wrote carries its name (``machine.encode_batch``): its outcomes, one
per call, are kept by offset for the caller waiting on them (``take_outcomes``). At most
``RESULTS_MAX`` outcomes are kept; past it the oldest are dropped and counted
(``results_dropped``), and their caller gets ``Unavailable`` (the call may have applied).

A caller that wrote records waits (``wait_applied``) until every record below their end is
applied here: a follower learns the high watermark from its next fetch, so the wait is woken
by each application and also re-checks twice a second, at most ``COMMIT_WAIT_S`` in all.
Applying a record that may make a message visible (``WAKING_VERBS``) calls ``on_waking`` so
long polls look again; every ``snapshot_every`` applied commands a snapshot is written
(``blocks.queue.snapshots``), and a leader's snapshot may replace the machine (``install``).

One asyncio loop; the reads of the log and the snapshot writes are its only I/O.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from blocks.core.errors import Timeout, Unavailable
from blocks.queue.machine import Outcome, QueueMachine
from blocks.queue.snapshots import LogBroker, Snapshots

__all__ = ["APPLY_BATCH", "COMMIT_WAIT_S", "RESULTS_MAX", "WAKING_VERBS", "AppliedLog"]

RESULTS_MAX = 100_000
APPLY_BATCH = 1_000
COMMIT_WAIT_S = 15.0  # longest a node waits to learn that its committed records are committed
WAKING_VERBS = frozenset({"send", "nack", "ack", "create"})
Key = tuple[str, int]


class AppliedLog:
    """The machine a node applies the committed log to, and its own records' outcomes."""

    def __init__(
        self,
        node: str,
        log: LogBroker,
        key: Key,
        snapshots: Snapshots,
        machine: QueueMachine,
        on_waking: Callable[[], None],
    ) -> None:
        self.node = node
        self.machine = machine
        self.replayed = 0  # records applied since this object was built (a restart's replay)
        self.results_dropped = 0
        self._log = log
        self._key = key
        self._snapshots = snapshots
        self._on_waking = on_waking
        # The outcomes of this node's own records, by offset, for the callers waiting on them.
        self._results: collections.OrderedDict[int, list[Outcome]] = collections.OrderedDict()
        self._results_held = 0  # outcomes in _results (a record holds one per call)
        self._applied_event = asyncio.Event()

    def install(self, machine: QueueMachine) -> bool:
        """Make a leader's snapshot the applied state: durable first, then applied; never
        backwards (False: this node has applied as much already)."""
        if machine.applied <= self.machine.applied:
            return False
        self._snapshots.install(machine)
        self.machine = machine
        return True

    def apply_committed(self) -> None:
        """Apply every committed record not applied yet (in offset order; synchronous)."""
        replica = self._log.replication.replicas.get(self._key)
        if replica is None:
            return
        store = self._log.topics.store(*self._key)
        machine = self.machine
        woke = False
        while machine.applied < replica.hw:
            # The records written here lately, as written; the log only for the others.
            kept = self._log.recent(self._key, machine.applied)
            if kept is not None:
                if kept.control:
                    machine.applied = kept.offset + 1
                    continue
                batch = [kept]
            else:
                batch = store.read(machine.applied, APPLY_BATCH, 1 << 24)
                batch = [r for r in batch if r.offset < replica.hw]
            if not batch:
                machine.applied = replica.hw  # only control records were left
                break
            commands = 0
            for record in batch:
                origin, applied = machine.apply_record(record.offset, record.value)
                commands += len(applied)
                woke = woke or any(c and c[0] in WAKING_VERBS for c, _ in applied)
                if origin == self.node:
                    self._keep(record.offset, [outcome for _, outcome in applied])
            self.replayed += commands
            self._snapshots.since += commands
        self._snapshots.maybe_write(machine, self._log, self._key)
        self._applied_event.set()
        self._applied_event = asyncio.Event()
        if woke:
            self._on_waking()

    def _keep(self, offset: int, outcomes: list[Outcome]) -> None:
        self._results[offset] = outcomes
        self._results_held += len(outcomes)
        while self._results_held > RESULTS_MAX:
            _, dropped = self._results.popitem(last=False)
            self._results_held -= len(dropped)
            self.results_dropped += len(dropped)

    async def wait_applied(self, end: int, closed: Callable[[], bool]) -> None:
        """Return once every record below ``end`` is committed and applied here; ``Timeout``
        after ``COMMIT_WAIT_S`` or once ``closed()``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + COMMIT_WAIT_S
        self.apply_committed()
        while self.machine.applied < end:
            remaining = deadline - loop.time()
            if remaining <= 0 or closed():
                raise Timeout("the committed records did not reach this node in time; retry")
            event = self._applied_event
            try:
                await asyncio.wait_for(event.wait(), min(remaining, 0.5))
            except TimeoutError:
                self.apply_committed()

    def take_outcomes(self, base: int, counts: list[int]) -> list[Outcome]:
        """The outcomes of this node's records at ``base``, ``base + 1``, ... holding
        ``counts`` calls each, in order; forgotten here. ``Unavailable`` when some were
        dropped (past ``RESULTS_MAX``): those calls may have applied."""
        outcomes: list[Outcome] = []
        for offset, count in enumerate(counts, start=base):
            got = self._results.pop(offset, None)
            if got is not None:
                self._results_held -= len(got)
            if got is None or len(got) != count:
                raise Unavailable("the outcome of this call was dropped; it may have applied")
            outcomes.extend(got)
        return outcomes
