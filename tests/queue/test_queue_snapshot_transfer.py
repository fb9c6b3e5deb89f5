"""Install-snapshot: a follower below its leader's log start (its directory wiped while the
leader's snapshots cut the log) is answered ``behind``, receives the leader's snapshot in
chunks, installs it, catches up, and can serve once the old leader is gone."""

from __future__ import annotations

import asyncio
import random
import shutil
from pathlib import Path
from typing import Any

from snapshot_nodes import snapshotting_node

from blocks.core.memory_network import MemoryNetwork
from blocks.pubsub.replica import FollowerAction, PartitionReplica, ReplicaConfig, Role
from blocks.pubsub.replica_messages import FetchRequest
from blocks.pubsub.replication import ReplicationConfig
from blocks.queue import snapshots
from blocks.queue.replicated import LOG_TOPIC, ReplicatedQueue

NODES = ["q1", "q2", "q3"]


def test_a_fetch_below_the_log_start_is_answered_behind_and_restarts_the_log() -> None:
    """The generic part (pubsub's cores): no crash and no false hold for the follower."""
    leader = PartitionReplica.created(ReplicaConfig("a", ("a", "b", "c")), random.Random(1), 0)
    leader.note_appended(0, [1] * 100, 0)
    leader.log_start = 60  # retention or a snapshot cut the log
    (decision,) = leader.handle_fetch("b", FetchRequest(1, 10, 1), 5).replies
    assert (decision.kind, decision.offset) == ("behind", 60)
    assert "b" not in leader.match and "b" not in leader.isr
    follower = PartitionReplica.created(ReplicaConfig("b", ("a", "b", "c")), random.Random(2), 0)
    follower.note_appended(0, [1] * 10, 0)
    assert follower.handle_fetch_reply("a", decision, 5).replies == ((FollowerAction.RESTART, 60),)
    follower.note_restarted(60)
    request = follower.fetch_request()
    assert request is not None and (request.offset, request.last_epoch) == (60, 0)
    (answer,) = leader.handle_fetch("b", request, 6).replies
    assert (answer.kind, answer.offset) == ("records", 60)
    leader.log_start = 20  # another leader whose log starts lower serves the empty log too
    (answer,) = leader.handle_fetch("b", request, 7).replies
    assert (answer.kind, answer.offset) == ("records", 60)
    assert leader.role is Role.LEADER


def test_a_wiped_follower_installs_the_leaders_snapshot_and_serves_after_failover(
    tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setattr(snapshots, "CHUNK_BYTES", 512)  # several chunks per transfer

    async def run() -> None:
        network = MemoryNetwork(seed=5)
        # Elections only when a leader is really gone: a pause of the test process (a full
        # collection of a large suite's heap) longer than a short timeout moved the leader
        # under the test's feet once in a full run.
        timing = ReplicationConfig(election_timeout_ms=1_500, lag_max_ms=4_000)

        def node(name: str) -> ReplicatedQueue:
            return snapshotting_node(tmp_path, network, NODES, name, timing)

        nodes = [node(name) for name in NODES]
        for each in nodes:
            await each.open()
        try:
            await _until(lambda: any(n.is_leader for n in nodes))
            leader = next(n for n in nodes if n.is_leader)
            await leader.create_queue("jobs", visibility_ms=60_000)
            bodies = {b"a%d" % i for i in range(30)}
            for body in sorted(bodies):
                await leader.send("jobs", body)
            follower = next(n for n in nodes if not n.is_leader)
            name = follower.node
            await follower.close()
            await follower.log.transport.close()
            shutil.rmtree(tmp_path / name)  # the disk is gone

            for i in range(120):
                bodies.add(b"b%d" % i)
                await leader.send("jobs", b"b%d" % i)
            received = await leader.receive("jobs", max_messages=10)
            for message in received:
                await leader.ack("jobs", message.receipt)
                bodies.discard(message.body)
            store = leader.log.topics.store(LOG_TOPIC, 0)
            assert store.first_offset > 0, "the leader's log was not cut"

            rejoined = node(name)
            nodes[nodes.index(follower)] = rejoined
            await rejoined.open()
            await _until(lambda: rejoined.machine.applied >= leader.machine.applied)
            assert rejoined.snapshots_installed >= 1
            assert rejoined.machine.snapshot() == leader.machine.snapshot()
            await _until(lambda: name in leader.describe()["isr"])

            await leader.close()
            await leader.log.transport.close()
            nodes.remove(leader)
            await _until(lambda: any(n.is_leader for n in nodes))
            await rejoined.send("jobs", b"after")
            bodies.add(b"after")
            got: set[bytes] = set()
            while True:
                found = await rejoined.receive("jobs", max_messages=10)
                if not found:
                    break
                got.update(message.body for message in found)
            assert got == bodies, "acknowledged, undeleted messages were lost"
        finally:
            for each in nodes:
                await each.close()
                await each.log.transport.close()

    asyncio.run(run())


async def _until(condition: Any, timeout_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.01)


def test_a_pubsub_follower_below_a_retention_cut_restarts_its_log_there() -> None:
    """The generic path on a plain replicated topic: a follower wiped after the leader's
    retention cut its log is answered ``behind``, starts its log at the cut and catches up."""

    async def run() -> None:
        from blocks.pubsub import ClusterBroker

        network = MemoryNetwork(seed=3)
        timing = ReplicationConfig(election_timeout_ms=5_000, lag_max_ms=30_000)
        brokers = [
            ClusterBroker(
                None,
                network.transport(name),
                NODES,
                rng=random.Random(name),
                replication=timing,
            )
            for name in NODES
        ]
        for broker in brokers:
            broker.start()
        try:
            await brokers[0].create_topic("t", 1)
            key = ("t", 0)
            leader = next(b for b in brokers if b.describe(*key).get("role") == "leader")
            follower = next(b for b in brokers if b is not leader)
            for index in range(30):
                await leader.produce("t", b"v%d" % index, partition=0)
            leader.topics.store(*key).truncate_before(20)
            leader.apply_retention()
            start = leader.topics.store(*key).first_offset
            assert start > 0
            # the follower lost its records: a fresh in-memory log
            follower.topics.restart_at("t", 0, 0)
            follower.replication.replicas[key].note_restarted(0)
            await _until(lambda: follower.topics.store(*key).next_offset >= 30)
            assert follower.topics.store(*key).first_offset == start
        finally:
            for broker in brokers:
                await broker.close()
                await broker.transport.close()

    asyncio.run(run())
