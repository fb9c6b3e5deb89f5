"""``Replication``: the asyncio driver that runs a broker's ``PartitionReplica`` cores.

Theory of operation
-------------------
One ``PartitionReplica`` per partition this broker holds (placement: rendezvous hashing of
``topic/partition`` over the cluster's nodes, ``replication_factor`` of them). The driver
feeds the cores and carries out what they decide; it holds no policy of its own:

* the timers a core asks for in its ``Ready`` (its election deadline, a leader's next check
  of the ISR, announcements and its own majority) are armed on the event loop
  (``ready_timers``) and call ``tick`` on that core when they fall due; nothing ticks on an
  interval, so an idle broker sleeps until a timer or a message (``resume`` asks a core for
  its timers when the driver starts it);
* one fetch task per partition sends the core's ``fetch_request`` to its leader, then appends
  the records that come back (durably, before the next fetch, so a fetch offset means
  "stored here"), or cuts the log where the core says, and reports both to the core;
* the transport handler answers follower fetches (holding one that finds nothing new for up to
  ``fetch_wait_ms``, so records flow out as soon as they are written) and passes votes and
  announcements to the core. A leader's records go out as soon as they are in its store,
  while its own fsync still runs (the core counts the leader's hold only once it is durable,
  so the two fsyncs of a round overlap). A follower learns the high watermark from the fetch
  answers; one with callers waiting on it (``awaiting_commit``) marks its fetches
  ``waiting``, and the leader answers such a fetch as soon as the high watermark moves past
  what it last told that follower, so those callers learn their commit one round trip later,
  not at the next write. A follower's other fetches stay held until records arrive (or
  ``fetch_wait_ms``): the high watermark then travels with the next records, which saves a
  round trip per write. A held fetch waits on a plain future and a timer (no task per hold),
  and the leader answers the fetches of its newest batch from that batch as it wrote it (kept
  in wire form with its epoch), reading the log only for anything else. With
  ``follower_sync_inline`` a follower fsyncs what it fetched on the loop, not in the group
  commit's worker thread;
* ``settle`` carries out the ``Ready`` (``blocks.core.ready``) of every core step at once,
  before the core is called again: its records first (a ``HardState`` is an atomic file
  replace, an ``EpochMarker`` the control record a new leader appends), then its messages,
  then its timers; the step's reply, if any, is the caller's to use. A change of the core's
  role or leader wakes whoever waits for one (``wait_role_change``: a fetch loop without a
  leader, a call waiting out an election). Then it resolves ``acks=all`` waiters
  whose records the high watermark passed, fails those whose leader epoch ended (they may
  still be committed later: the producer retries under its sequence number and gets the
  original offset), and wakes long polls.

Replication messages are one-way and carry the topic's configuration, so a broker that was
down when a topic was created learns of it from the first message about it. Bounds: at most
``SENDS_MAX`` sends in flight (more are dropped: every message here is retried by the
protocol), ``WAITERS_MAX`` acknowledgement waiters per partition, and fetch answers of at most
``FETCH_RECORDS_MAX`` records or ``FETCH_BYTES_MAX`` bytes.

Around this module: ``commit_waiters`` (the ``acks=all`` waiters and what settles them),
``fetch_serving`` (held fetches and the kept batch) and ``hard_state`` (the
``(epoch, voted_for)`` files, the epoch history read back from the log).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from blocks.core.clock import Clock
from blocks.core.errors import BlocksError, PeerError, Timeout, Unavailable
from blocks.core.ready import NOTHING
from blocks.core.transport import Transport
from blocks.pubsub.commit_waiters import WAITERS_MAX, CommitWaiters
from blocks.pubsub.fetch_serving import FETCH_BYTES_MAX, FETCH_RECORDS_MAX, FetchServing
from blocks.pubsub.hard_state import HardStateFiles, epoch_history
from blocks.pubsub.ready_timers import ReadyTimers
from blocks.pubsub.record import StoredRecord, record_from_wire
from blocks.pubsub.replica import FollowerAction, PartitionReplica, ReplicaConfig, Role
from blocks.pubsub.replica_messages import (
    BeginEpoch,
    FetchDecision,
    FetchRequest,
    HardState,
    Message,
    ReplicaReady,
    VoteReply,
    VoteRequest,
    decode,
    encode,
)
from blocks.pubsub.replication_config import ReplicationConfig, replica_set
from blocks.pubsub.topics import TopicConfig, TopicTable

__all__ = [
    "FETCH_BYTES_MAX",
    "FETCH_RECORDS_MAX",
    "WAITERS_MAX",
    "Replication",
    "ReplicationConfig",
    "epoch_history",
    "replica_set",
]

SENDS_MAX = 1_000
Key = tuple[str, int]


class Replication:
    """See the module docs. ``on_committed(key)`` is called when a high watermark moves."""

    def __init__(
        self,
        topics: TopicTable,
        transport: Transport,
        nodes: list[str],
        clock: Clock,
        rng: random.Random,
        config: ReplicationConfig,
        state_directory: Path | None,
        on_committed: Callable[[Key], None],
        before_restart: Callable[[Key, str, int], Awaitable[None]] | None = None,
    ) -> None:
        self.topics, self.transport, self.clock, self.config = topics, transport, clock, config
        self.node = transport.name
        self.nodes = sorted(set(nodes) | {self.node})
        self._rng = rng
        self.hard_states = HardStateFiles(state_directory)
        self._on_committed = on_committed
        self._before_restart = before_restart
        self.replicas: dict[Key, PartitionReplica] = {}
        self._hw: dict[Key, int] = {}
        self._commit_waiters = CommitWaiters()
        self._fetches = FetchServing()
        self._told_hw: dict[tuple[Key, str], int] = {}  # the high watermark a follower was sent
        self._config_wires: dict[str, tuple[TopicConfig, dict[str, Any]]] = {}
        self._writes_in_flight: dict[Key, int] = {}
        self._awaiting: dict[Key, int] = {}  # callers here waiting to learn a commit
        self._timers: ReadyTimers[Key] = ReadyTimers(clock, self._on_timer)
        self._roles: dict[Key, tuple[Role, str | None]] = {}  # as the last settle saw them
        self._role_changes: dict[Key, asyncio.Event] = {}  # set, then dropped, on a change
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sends: set[asyncio.Task[Any]] = set()
        self._started = False
        self._closed = False
        for name in topics.names():
            self.open_topic(topics.topic(name).config, fresh=False)

    def now_ms(self) -> int:
        return int(self.clock.monotonic() * 1000)

    # -- replicas -------------------------------------------------------------------------

    def placement(self, topic: str, partition: int) -> tuple[str, ...]:
        return replica_set(topic, partition, self.nodes, self.config.replication_factor)

    def open_topic(self, config: TopicConfig, *, fresh: bool) -> None:
        """Create the cores for a topic's partitions held here (``fresh``: just created)."""
        for partition in range(config.partitions):
            key = (config.name, partition)
            replicas = self.placement(config.name, partition)
            if key in self.replicas or self.node not in replicas:
                continue
            replica_config = ReplicaConfig(
                self.node,
                replicas,
                election_timeout_ms=self.config.election_timeout_ms,
                lag_max_ms=self.config.lag_max_ms,
                commit_on_majority=self.config.commit_on_majority,
            )
            saved = self.hard_states.load(key)
            rng = random.Random(self._rng.random())
            if saved is None:
                replica = PartitionReplica.created(replica_config, rng, self.now_ms())
            else:
                store = self.topics.store(*key)
                replica = PartitionReplica(
                    replica_config,
                    rng,
                    self.now_ms(),
                    epoch=saved[0],
                    voted_for=saved[1],
                    epochs=epoch_history(store.read, store.first_offset),
                    log_start=store.first_offset,
                    log_end=store.next_offset,
                )
            self.replicas[key] = replica
            self._hw[key] = replica.hw
            self._fetches.open(key)
            self._writes_in_flight[key] = 0
            self._roles[key] = (replica.role, replica.leader)
            if self._started:
                self._run_replica(key)

    def start(self) -> None:
        self._started = True
        for key in self.replicas:
            self._run_replica(key)

    def _run_replica(self, key: Key) -> None:
        """Start a core's fetch loop and arm the timers it asks for."""
        self._spawn(self._fetch_loop(key))
        self._spawn(self._step_timer(key, resume=True))

    def _on_timer(self, key: Key, name: str) -> None:
        self._spawn(self._step_timer(key, resume=False))

    async def _step_timer(self, key: Key, *, resume: bool) -> None:
        replica, now_ms = self.replicas[key], self.now_ms()
        await self.settle(key, replica.resume(now_ms) if resume else replica.tick(now_ms))

    @property
    def timer_wakeups(self) -> int:
        """Timers that woke this driver so far (fired, or re-armed for a later request)."""
        return self._timers.wakeups

    async def wait_role_change(self, key: Key, timeout_s: float | None) -> None:
        """Return once a step changed the role or the leader of ``key``'s core, or after
        ``timeout_s`` (None: no limit)."""
        changed = self._role_changes.get(key)
        if changed is None:
            changed = self._role_changes[key] = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout_s)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._closed = True
        self._timers.close()
        for task in list(self._tasks) + list(self._sends):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._sends, return_exceptions=True)
        self._commit_waiters.fail_all(Unavailable("broker is closing"))

    # -- after every core call ----------------------------------------------------------------

    async def settle(self, key: Key, ready: ReplicaReady[Any] = NOTHING) -> None:
        """Carry out a step's ``Ready`` (records, then messages) and react to what the step
        changed; call it right after the step, before the core is called again."""
        replica = self.replicas[key]
        for record in ready.records:
            if isinstance(record, HardState):
                # A vote must survive power loss, or a replica could vote twice in one epoch.
                self.hard_states.save(key, record)
            else:  # an EpochMarker: owed by the leader it still is (the step just ended)
                await self._append_marker(key, replica)
        for destination, message in ready.messages:
            self.send(destination, key, message)
        if self._started and not self._closed:
            for name, due_ms in ready.timers:
                self._timers.arm(key, name, due_ms)
        role = self._roles[key]
        if role[0] is not replica.role or role[1] != replica.leader:
            self._roles[key] = (replica.role, replica.leader)
            changed = self._role_changes.pop(key, None)
            if changed is not None:
                changed.set()
        self._commit_waiters.resolve(key, replica)
        if replica.hw != self._hw[key]:
            self._hw[key] = replica.hw
            if replica.role is Role.LEADER:
                self._fetches.wake(key)  # the followers learn the new high watermark
            self._on_committed(key)

    async def _append_marker(self, key: Key, replica: PartitionReplica) -> None:
        topic = self.topics.topic(key[0])
        timestamp_ms = max(self.clock.now_ms(), topic.last_timestamp_ms[key[1]])
        marker = StoredRecord(
            replica.log_end, timestamp_ms, None, b"", None, -1, replica.epoch, True
        )
        await self.append(key, [marker])

    async def append(self, key: Key, records: list[StoredRecord]) -> None:
        """Store records continuing the log and tell the core, in one step (so the core's view
        and the store never disagree), then wait until they are durable here.

        Held follower fetches are woken before the write: they run once this task first
        suspends, which is after the records are in the store (the write itself does not
        suspend) and while their fsync runs; a write that fails rolls the core back first.
        """
        replica, store = self.replicas[key], self.topics.store(*key)
        assert records[0].offset == replica.log_end == store.next_offset
        end = records[-1].offset + 1
        replica.note_appended(
            records[0].offset, [r.epoch for r in records], self.now_ms(), durable=False
        )
        self._writes_in_flight[key] += 1
        leading = replica.role is Role.LEADER
        self._fetches.keep_batch(key, replica.epoch if leading else None, records)
        self._fetches.wake(key)
        inline = self.config.follower_sync_inline and not leading
        try:
            await self.topics.write(key[0], key[1], records, inline_sync=inline)
        except BaseException:
            if store.next_offset == records[0].offset:  # nothing was written
                replica.note_truncated(records[0].offset)
            raise
        finally:
            self._writes_in_flight[key] -= 1
        replica.note_durable(end)

    async def wait_committed(self, key: Key, end: int, epoch: int) -> None:
        """Return once the high watermark reaches ``end`` in leader epoch ``epoch``."""
        future = self.commit_waiter(key, end, epoch)
        try:
            await asyncio.wait_for(future, self.config.ack_timeout_ms / 1000.0)
        except TimeoutError:
            raise Timeout("the in-sync replicas did not confirm in time") from None

    def commit_waiter(self, key: Key, end: int, epoch: int) -> asyncio.Future[None]:
        """A future resolved once the high watermark reaches ``end`` in leader epoch
        ``epoch`` (failed with ``Unavailable`` when that epoch ends first); no timeout of its
        own. Raises ``Unavailable`` or ``Overloaded`` at once."""
        return self._commit_waiters.waiter(key, self.replicas[key], end, epoch)

    @contextlib.contextmanager
    def awaiting_commit(self, key: Key) -> Iterator[None]:
        """Within it, a follower's fetches ask the leader to answer as soon as the high
        watermark moves (callers here wait for it); outside, a follower with nothing to
        append learns the high watermark with the next records, or after ``fetch_wait_ms``,
        which saves a round trip per write."""
        self._awaiting[key] = self._awaiting.get(key, 0) + 1
        try:
            yield
        finally:
            self._awaiting[key] -= 1

    # -- messages -----------------------------------------------------------------------------

    def send(self, destination: str, key: Key, message: Message) -> None:
        if len(self._sends) >= SENDS_MAX or self._closed:
            return  # dropped: elections and announcements are retried by the protocol
        wire = {
            "op": "replica",
            "cfg": self._config_wire(key[0]),
            "p": key[1],
            "m": encode(message),
        }
        task = asyncio.ensure_future(self._send(destination, wire))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send(self, destination: str, wire: dict[str, Any]) -> None:
        with contextlib.suppress(BlocksError):
            await self.transport.send(destination, wire)

    def _config_wire(self, topic: str) -> dict[str, Any]:
        """The topic's configuration as messages carry it (made once per configuration: it
        rides on every fetch)."""
        config = self.topics.topic(topic).config
        kept = self._config_wires.get(topic)
        if kept is None or kept[0] is not config:
            kept = self._config_wires[topic] = (config, asdict(config))
        return kept[1]

    async def handle_message(self, source: str, key: Key, message: Message) -> None:
        replica = self.replicas.get(key)
        if replica is None:
            return
        now_ms = self.now_ms()
        if isinstance(message, VoteRequest):
            # The vote (a HardState) is persisted before the reply leaves.
            ready = replica.handle_vote_request(source, message, now_ms)
        elif isinstance(message, VoteReply):
            ready = replica.handle_vote_reply(source, message, now_ms)
        elif isinstance(message, BeginEpoch):
            ready = replica.handle_begin_epoch(source, message, now_ms)
        else:
            raise PeerError(f"unexpected one-way message {type(message).__name__}")
        await self.settle(key, ready)

    async def handle_fetch(self, source: str, key: Key, request: FetchRequest) -> dict[str, Any]:
        replica = self.replicas.get(key)
        if replica is None:
            raise Unavailable(f"{self.node} holds no replica of {key[0]}/{key[1]}")
        decision = await self._decide_fetch(key, replica, source, request)
        told = (key, source)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.fetch_wait_ms / 1000.0
        while (
            decision.kind == "records"
            and decision.offset >= replica.log_end
            and (self._told_hw.get(told) == decision.hw or not request.waiting)
        ):
            # Nothing to send, and no new high watermark this follower waits for: hold.
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await self._fetches.hold(key, remaining)
            decision = await self._decide_fetch(key, replica, source, request)
        self._told_hw[told] = decision.hw
        rows: list[Any] = []
        if decision.kind == "records":
            end = replica.log_end
            rows = self._fetches.rows(key, self.topics, replica.epoch, end, decision.offset)
        return {"m": encode(decision), "records": rows}

    async def _decide_fetch(
        self, key: Key, replica: PartitionReplica, source: str, request: FetchRequest
    ) -> FetchDecision:
        """The core's answer to a fetch, once its ``Ready`` is carried out."""
        ready = replica.handle_fetch(source, request, self.now_ms())
        await self.settle(key, ready)
        (decision,) = ready.replies
        return decision

    # -- loops --------------------------------------------------------------------------------

    async def _fetch_loop(self, key: Key) -> None:
        replica = self.replicas[key]
        pause_s = self.config.fetch_retry_ms / 1000.0
        while not self._closed:
            request = replica.fetch_request(waiting=self._awaiting.get(key, 0) > 0)
            leader = replica.leader
            if request is None or leader is None:  # leading, or no leader known: wait for one
                await self.wait_role_change(key, None)
                continue
            wire = {"op": "replica_fetch", "cfg": self._config_wire(key[0]), "p": key[1]}
            wire["m"] = encode(request)
            try:
                reply = await self.transport.request(
                    leader, wire, timeout_s=self.config.fetch_timeout_ms / 1000.0
                )
                decision = decode(reply["m"])
                if not isinstance(decision, FetchDecision):
                    raise PeerError("a fetch answer must be a FetchDecision")
                await self._apply_fetch(key, replica, leader, decision, reply.get("records"))
            except (BlocksError, KeyError, TypeError):
                await asyncio.sleep(pause_s)

    async def _apply_fetch(
        self,
        key: Key,
        replica: PartitionReplica,
        leader: str,
        decision: FetchDecision,
        rows: Any,
    ) -> None:
        ready = replica.handle_fetch_reply(leader, decision, self.now_ms())
        await self.settle(key, ready)  # its HardState, before anything below suspends
        ((action, cut),) = ready.replies
        if action is FollowerAction.APPEND and isinstance(rows, list):
            records = [record_from_wire(row) for row in rows]
            records = [r for r in records if r.offset >= replica.log_end]
            if records and all(r.offset == replica.log_end + i for i, r in enumerate(records)):
                await self.append(key, records)
            replica.note_follower_hw(decision.hw)
        elif action is FollowerAction.TRUNCATE:
            while self._writes_in_flight[key]:  # a deposed leader's last writes finish first
                await asyncio.sleep(0.005)
            if replica.role is Role.FOLLOWER and cut < replica.log_start:
                self.topics.restart_at(key[0], key[1], cut)  # an empty log above the leader's
                replica.note_restarted(cut)
            elif replica.role is Role.FOLLOWER and cut < replica.log_end:
                self.topics.truncate_after(key[0], key[1], cut)
                replica.note_truncated(cut)
        elif action is FollowerAction.RESTART:
            while self._writes_in_flight[key]:
                await asyncio.sleep(0.005)
            if self._before_restart is not None:
                await self._before_restart(key, leader, cut)
            if replica.role is not Role.LEADER and cut > replica.log_end:
                self.topics.restart_at(key[0], key[1], cut)
                replica.note_restarted(cut)
        await self.settle(key)
