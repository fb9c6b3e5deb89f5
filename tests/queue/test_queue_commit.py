"""Pubsub replication as the replicated queue uses it: a record is committed once durable on
a majority (``commit_on_majority``) and a follower asks for the high watermark only while
its callers wait for it."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from blocks.core.clock import SystemClock
from blocks.core.memory_network import MemoryNetwork
from blocks.pubsub.replica import PartitionReplica, ReplicaConfig
from blocks.pubsub.replica_messages import FetchRequest, decode, encode
from blocks.pubsub.replication import ReplicationConfig
from blocks.queue.replicated import ReplicatedQueue

NODES = ("a", "b", "c")
QUEUE_NODES = ["q1", "q2", "q3"]


def leader(*, commit_on_majority: bool) -> PartitionReplica:
    config = ReplicaConfig(
        "a", NODES, election_timeout_ms=100, lag_max_ms=200, commit_on_majority=commit_on_majority
    )
    replica = PartitionReplica.created(config, random.Random(1), 0)
    replica.handle_fetch("b", FetchRequest(1, 0, 0), 1)  # both followers join the ISR at 0
    replica.handle_fetch("c", FetchRequest(1, 0, 0), 1)
    assert replica.isr == {"a", "b", "c"}
    replica.note_appended(0, [1, 1, 1, 1], now_ms=2, durable=False)  # fsync still running
    return replica


def test_two_durable_followers_commit_while_the_leaders_fsync_runs() -> None:
    majority, isr = leader(commit_on_majority=True), leader(commit_on_majority=False)
    for replica in (majority, isr):
        replica.handle_fetch("b", FetchRequest(1, 4, 1), 3)
        assert replica.hw == 0, "one durable copy of three is not a majority"
        replica.handle_fetch("c", FetchRequest(1, 4, 1), 4)
    assert majority.hw == 4, "b and c hold the records durably: a majority"
    assert isr.hw == 0, "acks=all also waits for the leader's own fsync"
    isr.note_durable(4)
    assert isr.hw == 4


def test_a_lagging_in_sync_follower_does_not_hold_a_majority_commit() -> None:
    majority, isr = leader(commit_on_majority=True), leader(commit_on_majority=False)
    for replica in (majority, isr):
        replica.note_durable(4)
        replica.handle_fetch("b", FetchRequest(1, 4, 1), 3)
    assert majority.hw == 4, "the leader and b hold them durably"
    assert isr.hw == 0, "c is in the ISR and holds none of them"


def test_the_leaders_unsynced_copy_never_counts() -> None:
    """The leader and one follower, the leader's write not yet durable: not committed (the
    follower's copy alone would not survive that follower's loss)."""
    replica = leader(commit_on_majority=True)
    replica.handle_fetch("b", FetchRequest(1, 4, 1), 3)
    replica.handle_fetch("c", FetchRequest(1, 2, 1), 3)
    assert replica.hw == 2, "only offsets 0-1 are durable on two replicas"
    replica.note_durable(4)
    assert replica.hw == 4


def test_a_follower_asks_for_the_high_watermark_only_with_something_to_learn() -> None:
    config = ReplicaConfig("b", NODES, election_timeout_ms=100, lag_max_ms=200)
    follower = PartitionReplica.created(config, random.Random(2), 0)
    assert follower.fetch_request(waiting=True) == FetchRequest(1, 0, 0, False)  # nothing held
    follower.note_appended(0, [1, 1, 1], now_ms=1)
    assert follower.fetch_request() == FetchRequest(1, 3, 1, False)
    assert follower.fetch_request(waiting=True) == FetchRequest(1, 3, 1, True)
    follower.note_follower_hw(3)
    assert follower.fetch_request(waiting=True) == FetchRequest(1, 3, 1, False)
    for request in (FetchRequest(1, 3, 1, True), FetchRequest(1, 3, 1)):
        assert decode(encode(request)) == request


def test_the_leader_answers_once_two_followers_hold_the_records_durably() -> None:
    """The leader's own write of a send stays unfinished (its fsync "runs" until a gate
    opens): the send is still answered, since both followers hold it durably, and a later
    receive through a follower finds it."""

    async def run() -> None:
        timing = ReplicationConfig(election_timeout_ms=5_000, lag_max_ms=10_000)
        network = MemoryNetwork(seed=7)
        nodes = [
            ReplicatedQueue(
                None,
                network.transport(name),
                QUEUE_NODES,
                clock=SystemClock(),
                rng=random.Random(name),
                replication=timing,
            )
            for name in QUEUE_NODES
        ]
        for node in nodes:
            await node.open()
        gate = asyncio.Event()
        try:
            await nodes[0].create_queue("jobs")
            leader = next(n for n in nodes if n.is_leader)
            original = leader.log.topics.write

            async def unfinished_write(*args: Any, **kwargs: Any) -> None:
                await original(*args, **kwargs)
                await gate.wait()

            leader.log.topics.write = unfinished_write  # type: ignore[method-assign]
            sent = await asyncio.wait_for(leader.send("jobs", b"held"), 20.0)
            follower = next(n for n in nodes if not n.is_leader)
            (found,) = await asyncio.wait_for(follower.receive("jobs"), 20.0)
            assert found.id == sent and found.body == b"held"
        finally:
            gate.set()
            for node in nodes:
                await node.close()
                await node.log.transport.close()

    asyncio.run(run())


def test_a_long_poll_on_a_follower_wakes_with_the_commit_not_the_fetch_hold() -> None:
    """A follower's fetches are held up to ``fetch_wait_ms`` (here a minute) unless callers
    on it wait; a long poll waiting there counts, so a send through the leader wakes it."""

    async def run() -> None:
        timing = ReplicationConfig(
            election_timeout_ms=5_000,
            lag_max_ms=120_000,
            fetch_wait_ms=60_000,
            fetch_timeout_ms=61_000,
        )
        network = MemoryNetwork(seed=11)
        nodes = [
            ReplicatedQueue(
                None,
                network.transport(name),
                QUEUE_NODES,
                clock=SystemClock(),
                rng=random.Random(name),
                replication=timing,
            )
            for name in QUEUE_NODES
        ]
        for node in nodes:
            await node.open()
        try:
            await nodes[0].create_queue("jobs")
            leader = next(n for n in nodes if n.is_leader)
            follower = next(n for n in nodes if not n.is_leader)
            poll = asyncio.ensure_future(follower.receive("jobs", wait_ms=30_000))
            await asyncio.sleep(0.5)  # the poll's first, empty, receive is done: it waits
            assert not poll.done()
            sent = await asyncio.wait_for(leader.send("jobs", b"wake"), 20.0)
            (found,) = await asyncio.wait_for(poll, 10.0)
            assert found.id == sent
        finally:
            for node in nodes:
                await node.close()
                await node.log.transport.close()

    asyncio.run(run())
