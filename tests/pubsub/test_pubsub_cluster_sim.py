"""Seeded simulation of a three-broker replicated cluster under ``acks=all`` load.

Safety phase: message loss, duplication and reordering, the leader of partition 0 killed and
restarted, then a network partition that cuts the current leader off from everyone. Healed
liveness phase: the producers finish, a consumer catches up. Then the history checker: no
acknowledged send lost, no value stored twice, polls monotonic, no consumer skips.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from blocks.core.errors import BlocksError
from blocks.core.memory_network import LinkConfig
from blocks.pubsub.checker import Commit, Poll, Send, check_history
from blocks.pubsub.cluster import ClusterBroker, ReplicationConfig
from blocks.testing.simloop import Simulation, run_simulation

NODES = ["b1", "b2", "b3"]
PARTITIONS = 2
SENDS_PER_PRODUCER = 60
TIMING = ReplicationConfig(
    election_timeout_ms=400, lag_max_ms=800, fetch_wait_ms=100, fetch_timeout_ms=200
)


class Cluster:
    def __init__(self, sim: Simulation, root: Path) -> None:
        self.sim, self.root = sim, root
        self.brokers = {name: self._open(name) for name in NODES}

    def _open(self, name: str) -> ClusterBroker:
        broker = ClusterBroker(
            self.root / name,
            self.sim.network.transport(name),
            NODES,
            clock=self.sim.clock,
            rng=random.Random(f"{self.sim.seed}:{name}"),
            fsync="never",
            replication=TIMING,
        )
        broker.start()
        return broker

    def leader(self, partition: int) -> str | None:
        leaders = [
            (b.describe("t", partition)["epoch"], n)
            for n, b in self.brokers.items()
            if self.sim.network.is_up(n) and b.describe("t", partition).get("role") == "leader"
        ]
        return max(leaders)[1] if leaders else None

    async def crash(self, name: str) -> None:
        self.sim.network.crash(name)
        await self.brokers[name].close()

    def restart(self, name: str) -> None:
        self.brokers[name] = self._open(name)
        self.sim.network.restart(name)

    async def close(self) -> None:
        for broker in self.brokers.values():
            await broker.close()


async def scenario(sim: Simulation, root: Path) -> dict[tuple[str, int], list[Any]]:
    cluster = Cluster(sim, root)
    await cluster.brokers["b1"].create_topic("t", partitions=PARTITIONS)
    sim.network.set_default_link(
        LinkConfig(delay_ms=(1, 15), loss=0.05, duplicate=0.05, reorder=0.1)
    )
    sends: list[Send] = []
    polls: list[Poll] = []
    commits: list[Commit] = []
    stop = asyncio.Event()
    rng = sim.random

    async def producer(name: str) -> None:
        """One stream per partition, each retrying its current sequence until acknowledged
        (idempotent retries), so one partition without a leader does not stall the other."""
        transport = sim.network.transport(name)

        async def stream(partition: int) -> None:
            for seq in range(SENDS_PER_PRODUCER // PARTITIONS):
                value = f"{name}:{partition}:{seq}".encode()
                message = {"op": "produce", "t": "t", "p": partition, "hops": 0}
                message.update(entries=[[None, value]], pid=name, seq=seq)
                while True:
                    try:
                        offset = await transport.request(rng.choice(NODES), message, timeout_s=1.0)
                    except BlocksError:
                        await asyncio.sleep(0.1)
                        continue
                    sends.append(Send(partition, offset, value))
                    break

        await asyncio.gather(*(stream(p) for p in range(PARTITIONS)))

    async def consumer() -> None:
        transport = sim.network.transport("consumer")
        positions = [0] * PARTITIONS
        while not stop.is_set():
            for partition in range(PARTITIONS):
                message = {"op": "fetch", "t": "t", "p": partition, "hops": 0}
                message.update(offset=positions[partition], max=20, wait=0)
                try:
                    rows = await transport.request(rng.choice(NODES), message, timeout_s=1.0)
                except BlocksError:
                    continue
                if rows:
                    polls.append(Poll("c", partition, tuple(row[0] for row in rows)))
                    positions[partition] = rows[-1][0] + 1
                    commits.append(Commit("g", partition, positions[partition]))
            await asyncio.sleep(0.05)

    async def nemesis() -> None:
        await asyncio.sleep(1.0)
        victim = cluster.leader(0) or "b1"
        await cluster.crash(victim)
        await asyncio.sleep(2.0)
        cluster.restart(victim)
        await asyncio.sleep(1.0)
        isolated = cluster.leader(1) or "b2"  # cut off with one producer, which keeps trying
        majority = [n for n in NODES if n != isolated]
        sim.network.partition([[isolated, "p1"], [*majority, "p2", "p3", "consumer"]])
        await asyncio.sleep(2.0)
        sim.network.heal()

    reader = asyncio.ensure_future(consumer())
    await asyncio.gather(producer("p1"), producer("p2"), producer("p3"), nemesis())
    sim.network.set_default_link(LinkConfig(delay_ms=(1, 5)))  # healed: liveness phase
    await asyncio.sleep(3.0)
    stop.set()
    await reader
    final: dict[int, list[tuple[int, bytes]]] = {}
    for partition in range(PARTITIONS):
        leader = cluster.brokers[cluster.leader(partition) or "b1"]
        records = await leader.fetch("t", partition, 0, 10_000)
        final[partition] = [(r.offset, r.value) for r in records]
    logs = {
        (n, p): [
            (r.offset, r.epoch, r.value)
            for r in b.topics.store("t", p).read(0, 10_000, 1 << 30, include_control=True)
        ]
        for n, b in cluster.brokers.items()
        for p in range(PARTITIONS)
    }
    await cluster.close()
    result = check_history(sends, polls, commits, final)
    assert result.valid, result
    assert len(sends) == 3 * SENDS_PER_PRODUCER
    assert sum(len(rows) for rows in final.values()) == len(sends), "a retry was stored twice"
    seen = {(poll.partition, o) for poll in polls for o in poll.offsets}
    assert len(seen) == len(sends), "the consumer should have read everything"
    return logs


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_replicated_cluster_loses_nothing_acknowledged(seed: int, tmp_path: Path) -> None:
    logs = run_simulation(lambda sim: scenario(sim, tmp_path / str(seed)), seed, time_limit_s=900)
    for partition in range(PARTITIONS):  # after healing, the replicas hold the same log
        first = logs[(NODES[0], partition)]
        for node in NODES[1:]:
            assert logs[(node, partition)] == first, (node, partition)
