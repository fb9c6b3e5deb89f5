"""The replicated queue in one process: the queue contract against one node of a three-node
cluster on an in-memory network, the state machine's determinism, and a leader's loss."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

from hypothesis import settings
from snapshot_nodes import snapshotting_node

from blocks.core.clock import ManualClock, SystemClock
from blocks.core.memory_network import MemoryNetwork
from blocks.pubsub.replication import ReplicationConfig
from blocks.queue.api import Queue
from blocks.queue.contract import QueueContract
from blocks.queue.machine import QueueMachine, encode_record
from blocks.queue.replicated import LOG_TOPIC, ReplicatedQueue

NODES = ["q1", "q2", "q3"]


async def _cluster(
    clock: Any, network: MemoryNetwork, timing: ReplicationConfig
) -> list[ReplicatedQueue]:
    queues = [
        ReplicatedQueue(
            None,
            network.transport(name),
            NODES,
            clock=clock,
            replication_clock=SystemClock(),
            rng=random.Random(name),
            replication=timing,
        )
        for name in NODES
    ]
    for queue in queues:
        await queue.open()
    return queues


class ReplicatedQueueContract(QueueContract):
    """The contract against one node of three (it forwards to the log's leader when it does
    not lead); replication keeps real time so that elections never fire between steps."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: list[ReplicatedQueue] = []

    async def make_subject(self) -> Queue:
        timing = ReplicationConfig(election_timeout_ms=5_000, lag_max_ms=10_000)
        self.nodes = await _cluster(self.clock, MemoryNetwork(seed=1), timing)
        return self.nodes[0]

    def teardown(self) -> None:
        try:
            for node in self.nodes:
                self.run(node.close())
                self.run(node.log.transport.close())
        finally:
            super().teardown()


TestReplicatedQueueContract = ReplicatedQueueContract.TestCase
TestReplicatedQueueContract.settings = settings(
    settings.default, max_examples=25, stateful_step_count=30, deadline=None
)


def _random_commands(seed: int, count: int) -> list[list[Any]]:
    """Commands as nodes would write them, receipts taken from a machine that ran them."""
    rng = random.Random(seed)
    machine = QueueMachine()
    now_ms = 1_000
    commands: list[list[Any]] = [
        ["create", now_ms, {"name": "dlq"}],
        ["create", now_ms, {"name": "work", "visibility_ms": 300, "max_receives": 2,
                            "dead_letter": "dlq", "dedup_window_ms": 500}],
        ["create", now_ms, {"name": "fifo", "visibility_ms": 200, "fifo": True,
                            "max_receives": 3, "dead_letter": "dlq"}],
    ]  # fmt: skip
    receipts: list[tuple[str, str]] = []
    for offset, command in enumerate(commands):
        machine.apply(offset, encode_record("a", command))
    while len(commands) < count:
        now_ms += rng.choice([0, 1, 50, 250, 700])
        name = rng.choice(["work", "fifo", "dlq", "missing"])
        verb = rng.choice(["send", "send", "receive", "ack", "nack", "extend"])
        if verb == "send":
            group = rng.choice([None, "g1", "g2"])
            dedup = rng.choice([None, None, "d1", "d2"])
            command = ["send", now_ms, name, b"x", rng.choice([0, 100]), group, dedup, 0]
        elif verb == "receive":
            command = ["receive", now_ms, name, rng.randint(1, 3), rng.choice([None, 150])]
        elif receipts:
            name, receipt = rng.choice(receipts)
            extra = rng.choice([0, 100])
            command = [verb, now_ms, name, receipt] + ([] if verb == "ack" else [extra])
        else:
            continue
        _, _, (ok, result) = machine.apply(len(commands), encode_record("a", command))
        if ok and verb == "receive":
            receipts.extend((name, message.receipt) for message in result)
        commands.append(command)
    return commands


def test_two_replicas_applying_the_same_records_end_equal() -> None:
    commands = _random_commands(seed=7, count=600)
    first, second = QueueMachine(), QueueMachine()
    outcomes: list[list[Any]] = [[], []]
    for machine, seen in zip((first, second), outcomes, strict=True):
        for offset, command in enumerate(commands):
            _, _, (ok, result) = machine.apply(offset * 2, encode_record("a", command))
            seen.append([ok, repr(result) if ok else type(result).__name__])
    assert first.snapshot() == second.snapshot()
    assert outcomes[0] == outcomes[1]
    kinds = {verb for verb, *_ in commands}
    assert {"send", "receive", "ack", "nack", "extend"} <= kinds
    assert any(not ok for ok, _ in outcomes[0]), "no command was refused: a weak sequence"
    counts = first.broker.queue("dlq").counts()
    assert sum(counts.values()) > 0, "nothing reached the dead-letter queue: a weak sequence"


def test_the_state_machine_never_reads_a_clock() -> None:
    """A receive's deadline comes from its record: replicas applying it at different times
    agree, and the message comes back only once the record-stamped deadline passes."""
    first, second = QueueMachine(), QueueMachine()
    records = [
        ["create", 10, {"name": "q", "visibility_ms": 1_000}],
        ["send", 20, "q", b"m", 0, None, None, 0],
        ["receive", 30, "q", 1, None],
        ["receive", 1_029, "q", 1, None],  # still hidden: the deadline is 1_030
        ["receive", 1_030, "q", 1, None],
    ]
    for machine in (first, second):
        got = [machine.apply(i, encode_record("n", r))[2] for i, r in enumerate(records)]
        assert [len(result) for ok, result in got[2:]] == [1, 0, 1]
        assert got[4][1][0].receipt == "1.2"
    assert first.snapshot() == second.snapshot()


def test_a_leader_loss_keeps_acknowledged_sends_and_acks() -> None:
    async def run() -> None:
        clock = ManualClock(wall_ms=1_000_000)
        network = MemoryNetwork(seed=3)
        timing = ReplicationConfig(election_timeout_ms=300, lag_max_ms=1_000)
        nodes = await _cluster(clock, network, timing)
        try:
            await nodes[0].create_queue("jobs", visibility_ms=5_000)
            await nodes[0].create_queue("orders", visibility_ms=5_000, fifo=True)
            ids = [await nodes[i % 3].send("jobs", f"m{i}".encode()) for i in range(20)]
            order = [await nodes[0].send("orders", b"o%d" % i, group="g") for i in range(3)]
            deduplicated = await nodes[1].send("orders", b"d", group="h", dedup_id="once")
            (head,) = await nodes[2].receive("orders")  # locks group g
            received = await nodes[1].receive("jobs", max_messages=5)
            for message in received[:3]:
                await nodes[2].ack("jobs", message.receipt)
            leader = next(n for n in nodes if n.is_leader)
            network.crash(leader.node)
            await leader.close()
            survivors = [n for n in nodes if n is not leader]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30.0
            while not any(n.is_leader for n in survivors):
                assert loop.time() < deadline, "no new leader"
                await asyncio.sleep(0.05)
            new_leader = next(n for n in survivors if n.is_leader)
            assert new_leader.machine.applied > 0
            again = await new_leader.send("orders", b"d2", group="h", dedup_id="once")
            assert again == deduplicated, "the dedup window did not hold across the failover"
            (other,) = await survivors[0].receive("orders", max_messages=3)
            assert other.id == deduplicated, "group g gave a message while it was locked"
            await new_leader.ack("orders", head.receipt)
            await new_leader.ack("orders", other.receipt)
            rest = await survivors[1].receive("orders", max_messages=3)
            assert [head.id, *(m.id for m in rest)] == order, "FIFO order broke in failover"
            more = await new_leader.receive("jobs", max_messages=20)
            assert {m.id for m in more} == set(ids[5:]), "in flight or acked came back early"
            for message in more:
                await survivors[1].ack("jobs", message.receipt)
            assert await survivors[0].receive("jobs") == []
            clock.advance(ms=5_000)
            back = await survivors[0].receive("jobs", max_messages=20)
            assert {m.id for m in back} == {m.id for m in received[3:]}
            assert all(m.receive_count == 2 for m in back)
        finally:
            for node in nodes:
                await node.close()
                await node.log.transport.close()

    asyncio.run(run())


def test_a_follower_learns_its_commit_without_waiting_for_new_records() -> None:
    """A follower answering a call learns that its record is committed from a fetch it marks
    ``waiting`` (its callers wait), which the leader answers as soon as the watermark moves
    past what it told that follower, never by waiting out ``fetch_wait_ms``: with a one-minute wait
    and nothing else written, sends and receives through both followers finish. (The stall
    this guards against showed in the process benchmark, 16 callers on a follower: p50
    208 ms, one ``fetch_wait_ms``; in one process the earlier code happened to pass.)"""

    async def run() -> None:
        timing = ReplicationConfig(
            election_timeout_ms=5_000,
            lag_max_ms=120_000,
            fetch_wait_ms=60_000,
            fetch_timeout_ms=61_000,
        )
        nodes = await _cluster(SystemClock(), MemoryNetwork(seed=5), timing)
        try:
            await nodes[0].create_queue("jobs")
            followers = [n for n in nodes if not n.is_leader]
            assert len(followers) == 2
            for round_ in range(3):
                for follower in followers:
                    sent = follower.send("jobs", b"r%d" % round_)
                    await asyncio.wait_for(sent, timeout=20.0)
            for follower in followers:
                found = await asyncio.wait_for(follower.receive("jobs"), 20.0)
                assert found, "a follower's receive found nothing"
        finally:
            for node in nodes:
                await node.close()
                await node.log.transport.close()

    asyncio.run(run())


def test_a_restarted_node_restores_its_snapshot_and_replays_only_the_tail(
    tmp_path: Path,
) -> None:
    """Nodes snapshot every 20 applied records and cut their logs below the previous
    snapshot; a follower closed and reopened on its directory starts from its snapshot,
    applies only the records after it, and ends equal to the others."""

    async def run() -> None:
        network = MemoryNetwork(seed=11)
        timing = ReplicationConfig(election_timeout_ms=5_000, lag_max_ms=30_000)

        def node(name: str) -> ReplicatedQueue:
            return snapshotting_node(tmp_path, network, NODES, name, timing)

        nodes = [node(name) for name in NODES]
        for each in nodes:
            await each.open()
        try:
            await nodes[0].create_queue("jobs", visibility_ms=60_000)
            leader = next(n for n in nodes if n.is_leader)
            sent = [await leader.send("jobs", b"m%d" % i) for i in range(120)]
            received = await leader.receive("jobs", max_messages=30)
            for message in received[:10]:
                await leader.ack("jobs", message.receipt)
            follower = next(n for n in nodes if not n.is_leader)
            await _until(lambda: follower.machine.applied == leader.machine.applied)
            total = follower.machine.records
            assert follower.snapshots >= 2
            store = follower.log.topics.store(LOG_TOPIC, 0)
            assert store.first_offset > 0, "the log was not cut below the previous snapshot"
            name = follower.node
            await follower.close()
            await follower.log.transport.close()

            restarted = node(name)
            assert restarted.machine.applied > 0, "the snapshot was not restored"
            await restarted.open()
            nodes[nodes.index(follower)] = restarted
            more = [await leader.send("jobs", b"n%d" % i) for i in range(5)]
            await _until(lambda: restarted.machine.applied == leader.machine.applied)
            assert restarted.machine.snapshot() == leader.machine.snapshot()
            assert 0 < restarted.replayed < total, "a restart replayed the whole log"
            stats = await restarted.stats("jobs")
            assert sum(stats.values()) == len(sent) + len(more) - 10
        finally:
            for each in nodes:
                await each.close()
                await each.log.transport.close()

    asyncio.run(run())


async def _until(condition: Any, timeout_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.01)
