"""``ReplicatedQueue``: a queue replicated across a cluster by state-machine replication.

Theory of operation
-------------------
Every call that may change the queue becomes a command in a record (``blocks.queue.machine``:
the command stamped with this node's clock, and this node's name; the calls of one batch, a
data-path frame, share one record) in one replicated log, and every node
applies the committed records in log order to its own ``QueueMachine``. The log is a
one-partition pubsub topic (``LOG_TOPIC``) run by ``blocks.pubsub.cluster.ClusterBroker``:
its leader election with epochs, followers fetching from the leader and the high watermark
are reused as they are, so the queue inherits what pubsub's tests prove about them. The queue
runs the log with ``commit_on_majority``: a record is committed once it is durable on a
majority of the nodes, whichever they are (Raft's rule; pubsub's default also waits for every
in-sync replica), so one slow disk, the leader's included, is not on an answer's path; the
log's leader answers a write once it is committed, even while its own fsync still runs
(``LogBroker.produce_batch``). A record below the high watermark is never truncated by a
later leader; a record above it may be, which is why nothing is applied before it is
committed.

A call on any node: the node writes its records with ``produce_batch`` (which the log's
leader serves; another node forwards it there, waiting out an election), learns their
offsets once they are committed, waits until its own high watermark passes them (a follower
learns it on its next fetch), applies every committed record up to them, and answers with
the outcomes its own records got. Since every node applies the same records to the same
deterministic machine, the outcome is the same wherever it is computed; receipts and
invisibility deadlines are decided by the record, never by a replica's clock or randomness.
So any node serves any call: clients need only a live node, and a node that leads applies
the whole committed log before it answers anything.

What a failure costs: a call that fails with ``Unavailable`` or ``Timeout`` (the leader died
or changed before answering) may or may not have been applied, as the queue API says of
those errors: a retried send may be stored twice (at-least-once; a dedup id makes it once), a
retried ack may answer ``NotFound``. A receive that was applied but not answered hides its
messages until their visibility timeout, then they come back. Nothing acknowledged is lost
while a majority of nodes holds the log.

Long polling: a receive that found nothing is retried when a record that may make a message
visible (a send, nack, ack or create) is applied here, or when the applied state's next timer
falls due, until ``wait_ms`` has passed. An empty receive is a record too (a few bytes).
Bounds: ``WAITERS_MAX`` long polls, ``RESULTS_MAX`` outcomes kept for callers (older ones are
dropped and counted), calls per batch as ``LocalQueue``. Not done: membership changes.

Durability: under ``fsync="batch"`` or ``"always"`` (the default is ``batch``) a record
counts on a node once fsynced there, so an answered call is fsynced on a majority. Under
``fsync="never"`` it counts once written (in the page cache): an answered call survives the
crash of any one node's process, not a majority of machines losing power at once; with
``sync_interval_ms`` a timer fsyncs the log that often (NATS JetStream's default durability,
whose ``sync_interval`` is two minutes), and a clean close fsyncs it.

Snapshots (``blocks.queue.snapshots``): every ``snapshot_every`` applied commands a node with a
directory writes its machine and cuts its log below its previous snapshot; reopened, it
restores the newest snapshot and applies only the tail. A follower below its leader's log
start (wiped, or away through more than an interval) is sent the leader's snapshot, installs
it, and fetches the records after it.

Around this module: ``applied_log`` (applying the committed records, the outcomes of this
node's own, and the wait until they are applied here), ``blocks.core.long_polls`` (receives waiting for
news) and ``machine`` (commands, records, the deterministic state machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import (
    BlocksError,
    FailedPrecondition,
    InvalidArgument,
)
from blocks.core.log import FsyncPolicy
from blocks.core.long_polls import WAITERS_MAX, LongPolls
from blocks.core.transport import Transport
from blocks.pubsub import ReplicationConfig, Role, TopicConfig
from blocks.queue.applied_log import RESULTS_MAX, AppliedLog
from blocks.queue.broker import QueueBroker
from blocks.queue.commands import CommandQueue, check_batch, wire_result
from blocks.queue.local import LocalQueue
from blocks.queue.machine import Outcome, QueueMachine, command_for_call, encode_records
from blocks.queue.snapshots import LogBroker, Snapshots

__all__ = ["LOG_TOPIC", "RESULTS_MAX", "WAITERS_MAX", "ReplicatedQueue"]

LOG_TOPIC = "__queue_log"
KEY = (LOG_TOPIC, 0)
SNAPSHOT_EVERY = 50_000  # applied commands between snapshots
SYNC_INTERVAL_MS_MAX = 3_600_000  # the longest fsync interval under fsync="never"


class ReplicatedQueue(CommandQueue):
    """One node of a replicated queue; ``await open()`` after building, ``close()`` at the end.

    ``clock`` stamps the records (the queue's time); ``replication_clock`` (default: the same)
    times the log's elections and in-sync replicas."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None,
        transport: Transport,
        nodes: Sequence[str],
        *,
        clock: Clock | None = None,
        replication_clock: Clock | None = None,
        rng: random.Random | None = None,
        fsync: FsyncPolicy = "batch",
        replication: ReplicationConfig | None = None,
        leader_wait_ms: int = 5_000,
        snapshot_every: int = SNAPSHOT_EVERY,
        segment_bytes_max: int = 16 << 20,
        sync_interval_ms: int | None = None,
    ) -> None:
        # A record is committed once durable on a majority (whichever nodes those are), so
        # one slow disk, the leader's included, is never on an acknowledgement's path. A
        # follower fsyncs what it fetched on its loop (it has nothing else to do meanwhile):
        # no thread hand-off on the path of every write.
        replication = dataclasses.replace(
            replication if replication is not None else ReplicationConfig(),
            commit_on_majority=True,
            follower_sync_inline=True,
        )
        if type(snapshot_every) is not int or snapshot_every < 1:
            raise InvalidArgument("snapshot_every must be a positive integer")
        if sync_interval_ms is not None and (
            fsync != "never"
            or type(sync_interval_ms) is not int
            or not 1 <= sync_interval_ms <= SYNC_INTERVAL_MS_MAX
        ):
            raise InvalidArgument(
                f"sync_interval_ms (1..{SYNC_INTERVAL_MS_MAX}) goes with fsync='never' only"
            )
        self._sync_interval_ms = sync_interval_ms
        self._syncer: asyncio.Task[None] | None = None
        self.interval_syncs = 0  # fsyncs of the log by the interval timer (tests, metrics)
        if len(set(nodes) | {transport.name}) > replication.replication_factor:
            raise InvalidArgument(
                f"a replicated queue runs on at most {replication.replication_factor} nodes"
                " (every node holds the whole log)"
            )
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._long_polls: LongPolls[str] = LongPolls(WAITERS_MAX)
        self._closed = False
        self._snapshots = Snapshots(None if directory is None else Path(directory), snapshot_every)
        self.log = LogBroker(
            None if directory is None else Path(directory) / "log",
            transport,
            nodes,
            clock=self._clock,
            replication_clock=replication_clock,
            rng=rng,
            fsync=fsync,
            replication=replication,
            leader_wait_ms=leader_wait_ms,
            on_committed=self._committed,
            snapshots=self._snapshots,
            install=self._install,
            segment_bytes_max=segment_bytes_max,
        )
        self.node = self.log.node
        restored = self._snapshots.restore(self.log, KEY)
        self._applied = AppliedLog(
            self.node,
            self.log,
            KEY,
            self._snapshots,
            restored if restored is not None else QueueMachine(),
            self._long_polls.wake_all,
        )

    async def open(self) -> ReplicatedQueue:
        """Create the log topic here if this node has not got it, then start replicating."""
        try:
            self.log.topics.topic(LOG_TOPIC)
        except BlocksError:
            await self.log._create_local(TopicConfig(LOG_TOPIC, 1, None, None, False))
        self.log.start()
        self._applied.apply_committed()
        if self._sync_interval_ms is not None:
            self._syncer = asyncio.get_running_loop().create_task(
                self._sync_every(self._sync_interval_ms / 1000.0)
            )
        return self

    async def _sync_every(self, interval_s: float) -> None:
        """Under ``fsync="never"``: fsync this node's log every ``interval_s`` (on the loop,
        so that no truncation or restart of the log runs beside it). A failed fsync leaves
        the log refusing work, as any failed fsync does; the timer goes on."""
        while not self._closed:
            await asyncio.sleep(interval_s)
            if self._closed or LOG_TOPIC not in self.log.topics.names():
                continue
            try:
                self.log.topics.store(*KEY).sync()
                self.interval_syncs += 1
            except (OSError, BlocksError):
                continue

    @property
    def machine(self) -> QueueMachine:
        """The applied state machine (read it; change it only through this object)."""
        return self._applied.machine

    @property
    def replayed(self) -> int:
        """Commands applied since this object was built (a restart's replay)."""
        return self._applied.replayed

    @property
    def results_dropped(self) -> int:
        """Outcomes of this node's calls dropped past ``RESULTS_MAX``."""
        return self._applied.results_dropped

    @property
    def broker(self) -> QueueBroker:
        """The applied state (read it; change it only through this object)."""
        return self.machine.broker

    def describe(self) -> dict[str, object]:
        """This node's view: the log's role, epoch, leader, high watermark, start; what is
        applied; snapshots written and installed from a leader."""
        store = self.log.topics.store(*KEY) if LOG_TOPIC in self.log.topics.names() else None
        return {
            **self.log.describe(*KEY),
            "log_start": 0 if store is None else store.first_offset,
            "applied": self.machine.applied,
            "snapshots": self._snapshots.written,
            "snapshots_installed": self._snapshots.installed,
        }

    @property
    def is_leader(self) -> bool:
        replica = self.log.replication.replicas.get(KEY)
        return replica is not None and replica.role is Role.LEADER

    # -- snapshots ------------------------------------------------------------------------

    @property
    def snapshots(self) -> int:
        """Snapshots written by this object (for tests and metrics)."""
        return self._snapshots.written

    @property
    def snapshot_failures(self) -> int:
        return self._snapshots.failures

    @property
    def snapshots_installed(self) -> int:
        """Snapshots received from a leader (this node was behind its log start)."""
        return self._snapshots.installed

    def snapshot(self) -> int:
        """Write the applied state to disk, then cut the log below the previous snapshot;
        return the offset the new snapshot covers."""
        return self._snapshots.write(self.machine, self.log, KEY)

    def _install(self, machine: QueueMachine) -> None:
        """Make a leader's snapshot this node's state: durable first, then applied (never
        backwards: a node applies only committed records, below any leader's log start)."""
        if self._applied.install(machine):
            self._long_polls.wake_all()

    # -- applying the log -----------------------------------------------------------------

    def _committed(self) -> None:
        if not self._closed and hasattr(self, "_applied"):
            self._applied.apply_committed()

    async def _submit(self, commands: list[list[Any]]) -> list[Outcome]:
        """Write the commands, wait until they are committed and applied here; outcomes."""
        if self._closed:
            raise FailedPrecondition("queue is closed")
        # One record for the whole batch (split while a record would be over RECORD_BYTES):
        # one log frame, one fetch row, one apply step for every call of a frame.
        chunks = encode_records(self.node, commands)
        entries: list[tuple[bytes | None, bytes]] = [(None, value) for value, _ in chunks]
        # A follower asks its leader for the new high watermark at once while calls wait.
        with self.log.replication.awaiting_commit(KEY):
            base = await self.log.produce_batch(LOG_TOPIC, 0, entries)
            await self._applied.wait_applied(base + len(entries), lambda: self._closed)
        return self._applied.take_outcomes(base, [count for _, count in chunks])

    async def _run(self, command: list[Any], *, touched: tuple[str, ...] = ()) -> Any:
        """Run one command (``touched`` is not needed: applying a record wakes receives)."""
        ((ok, result),) = await self._submit([command])
        if not ok:
            raise result
        return result

    # -- what the Queue interface (``CommandQueue``) runs on ------------------------------

    def _applied_broker(self) -> QueueBroker:
        return self.broker

    async def _wait(self, name: str, remaining_s: float) -> None:
        """Sleep until a waking record is applied or ``remaining_s`` passed."""
        self._long_polls.check_room()
        with self.log.replication.awaiting_commit(KEY):  # a follower hears commits soon
            await self._long_polls.wait(name, remaining_s)

    async def run_many(self, calls: Any) -> list[tuple[bool, Any]]:
        """Run wire calls in order as ``LocalQueue.run_many`` does: one batch of records,
        one commit; ``(True, result)`` or ``(False, error)`` per call."""
        check_batch(calls)
        now_ms = self._now()
        outcomes: list[tuple[bool, Any] | None] = []
        commands: list[list[Any]] = []
        for call in calls:
            try:
                commands.append(command_for_call(call, now_ms))
                outcomes.append(None)
            except BlocksError as error:
                outcomes.append((False, error))
        results = iter(await self._submit(commands) if commands else [])
        finished: list[tuple[bool, Any]] = []
        for index, outcome in enumerate(outcomes):
            if outcome is None:
                ok, result = next(results)
                outcome = (ok, wire_result(calls[index][0], result) if ok else result)
            finished.append(outcome)
        return finished

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._long_polls.wake_all()
        if self._syncer is not None:
            self._syncer.cancel()
            await asyncio.gather(self._syncer, return_exceptions=True)
            if LOG_TOPIC in self.log.topics.names():  # a clean stop leaves nothing unsynced
                with contextlib.suppress(OSError, BlocksError):
                    self.log.topics.store(*KEY).sync()
        await self.log.close()


QueueNode = LocalQueue | ReplicatedQueue  # what the service and the data path serve
