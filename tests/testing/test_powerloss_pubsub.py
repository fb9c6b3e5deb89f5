"""A three-broker pub-sub cluster in the simulator with power-loss crashes: nothing acknowledged
is lost, duplicated or reordered.

Producers send with idempotent retries (``pid``/``seq``) under ``acks=all`` while the nemesis
cuts the power of one broker at a time (the leader of partition 0 first): everything that
broker wrote since its last fsync is dropped, torn tails kept at random, then it restarts.
Under ``fsync="always"`` each broker's own log survives; under ``"never"`` the promise is the
replication's: an acknowledged record sits in every in-sync replica's page cache, and only one
replica loses power at a time. After a healed phase, the pub-sub history checker runs.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from blocks.core.errors import BlocksError
from blocks.core.log import FsyncPolicy
from blocks.core.memory_network import LinkConfig
from blocks.pubsub.cluster import ClusterBroker, ReplicationConfig
from blocks.pubsub.local import LocalBroker
from blocks.testing.checkers import Commit, Poll, Send, check_history
from blocks.testing.powerloss import PowerLossDisk
from blocks.testing.simloop import Simulation, run_simulation

NODES = ["b1", "b2", "b3"]
PARTITIONS = 2
SENDS_PER_STREAM = 25
TIMING = ReplicationConfig(
    election_timeout_ms=400, lag_max_ms=800, fetch_wait_ms=100, fetch_timeout_ms=200
)


class Cluster:
    def __init__(self, sim: Simulation, root: Path, fsync: FsyncPolicy) -> None:
        self.sim, self.root, self.fsync = sim, root, fsync
        self.disk = PowerLossDisk(random.Random(sim.seed), torn_tail_probability=0.5)
        for name in NODES:
            self.disk.track(root / name)
        self.brokers: dict[str, ClusterBroker] = {}
        self.dropped_bytes = 0

    def open(self, name: str) -> None:
        broker = ClusterBroker(
            self.root / name,
            self.sim.network.transport(name),
            NODES,
            clock=self.sim.clock,
            rng=random.Random(f"{self.sim.seed}:{name}:{len(self.brokers)}"),
            fsync=self.fsync,
            replication=TIMING,
        )
        broker.start()
        self.brokers[name] = broker

    def leader(self, partition: int) -> str | None:
        leaders = [
            (b.describe("t", partition)["epoch"], n)
            for n, b in self.brokers.items()
            if self.sim.network.is_up(n) and b.describe("t", partition).get("role") == "leader"
        ]
        return max(leaders)[1] if leaders else None

    async def power_loss(self, name: str) -> None:
        with self.disk.power_cut(self.root / name):
            self.sim.network.crash(name)
            await self.brokers[name].close()
        assert self.disk.last_report is not None
        self.dropped_bytes += self.disk.last_report.bytes_dropped

    def restart(self, name: str) -> None:
        self.open(name)
        self.sim.network.restart(name)


async def _scenario(sim: Simulation, root: Path, fsync: FsyncPolicy) -> int:
    cluster = Cluster(sim, root, fsync)
    with cluster.disk.installed():
        for name in NODES:
            cluster.open(name)
        try:
            return await _run(sim, cluster)
        finally:
            for broker in cluster.brokers.values():
                await broker.close()


async def _run(sim: Simulation, cluster: Cluster) -> int:
    await cluster.brokers["b1"].create_topic("t", partitions=PARTITIONS)
    sim.network.set_default_link(LinkConfig(delay_ms=(1, 10), loss=0.02, reorder=0.05))
    sends: list[Send] = []
    polls: list[Poll] = []
    commits: list[Commit] = []
    stop = asyncio.Event()
    rng = sim.random

    async def stream(name: str, partition: int) -> None:
        transport = sim.network.transport(f"{name}:{partition}")
        for seq in range(SENDS_PER_STREAM):
            value = f"{name}:{partition}:{seq}".encode()
            message = {"op": "produce", "t": "t", "p": partition, "hops": 0}
            message.update(entries=[[None, value]], pid=f"{name}:{partition}", seq=seq)
            while True:
                try:
                    offset = await transport.request(rng.choice(NODES), message, timeout_s=1.0)
                except BlocksError:
                    await asyncio.sleep(0.1)
                    continue
                sends.append(Send(partition, offset, value, f"{name}:{partition}", seq))
                break

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
        for round_number in range(3):
            await asyncio.sleep(0.8)
            victim = (cluster.leader(0) if round_number == 0 else None) or rng.choice(NODES)
            await cluster.power_loss(victim)
            await asyncio.sleep(1.5)
            cluster.restart(victim)

    reader = asyncio.ensure_future(consumer())
    producers = [stream(p, q) for p in ("p1", "p2") for q in range(PARTITIONS)]
    await asyncio.gather(*producers, nemesis())
    sim.network.set_default_link(LinkConfig(delay_ms=(1, 5)))  # healed: liveness phase
    await asyncio.sleep(3.0)
    stop.set()
    await reader
    final: dict[int, list[tuple[int, bytes]]] = {}
    for partition in range(PARTITIONS):
        leader = cluster.brokers[cluster.leader(partition) or "b1"]
        records = await leader.fetch("t", partition, 0, 10_000)
        final[partition] = [(r.offset, r.value) for r in records]
    result = check_history(sends, polls, commits, final)
    assert result.valid, result
    assert len(sends) == 2 * PARTITIONS * SENDS_PER_STREAM
    return cluster.dropped_bytes


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_power_loss_of_one_broker_under_fsync_never_loses_nothing_acknowledged(
    seed: int, tmp_path: Path
) -> None:
    dropped = run_simulation(lambda sim: _scenario(sim, tmp_path, "never"), seed, time_limit_s=300)
    assert dropped > 0, "the cuts should have dropped unsynced bytes"


@pytest.mark.parametrize("seed", [1, 2])
def test_power_loss_of_one_broker_under_fsync_always_loses_nothing_acknowledged(
    seed: int, tmp_path: Path
) -> None:
    run_simulation(lambda sim: _scenario(sim, tmp_path, "always"), seed, time_limit_s=60)


async def _local_broker_round(root: Path, disk: PowerLossDisk) -> list[bytes]:
    broker = LocalBroker(root, fsync="always")
    await broker.create_topic("t", partitions=1)
    for number in range(5):
        await broker.produce("t", b"v%d" % number, partition=0)
    with disk.power_cut(root):
        await broker.close()
    reopened = LocalBroker(root, fsync="always")
    try:
        return [record.value for record in await reopened.fetch("t", 0, 0, 100)]
    finally:
        await reopened.close()


@pytest.mark.parametrize("strict_directories", [True, False])
def test_local_broker_under_fsync_always_keeps_its_topic_after_power_loss(
    tmp_path: Path, strict_directories: bool
) -> None:
    disk = PowerLossDisk(random.Random(0), strict_directories=strict_directories)
    disk.track(tmp_path)
    with disk.installed():
        values = asyncio.run(_local_broker_round(tmp_path, disk))
    assert values == [b"v%d" % number for number in range(5)]
