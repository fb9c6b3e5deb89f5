"""Gossip replication over the simulated network: faults, partitions, then convergence."""

from __future__ import annotations

import asyncio
import random

import pytest

from blocks.core.memory_network import LinkConfig
from blocks.counters.gossip import GossipNode, GossipReplica
from blocks.testing.simloop import Simulation, run_simulation

NODES = [f"n{k}" for k in range(5)]
COUNTERS = ["views", "likes", "errors"]


async def scenario(sim: Simulation) -> None:
    network = sim.network
    network.set_default_link(LinkConfig(delay_ms=(1, 20), loss=0.3, duplicate=0.2, reorder=0.2))
    nodes = {
        name: GossipNode(
            GossipReplica(
                name, [p for p in NODES if p != name], rng=random.Random(f"{sim.seed}{name}")
            ),
            network.transport(name),
            interval_s=0.05,
        )
        for name in NODES
    }
    for node in nodes.values():
        node.start()
    acknowledged = dict.fromkeys(COUNTERS, 0)
    try:
        # Safety phase: increments everywhere while partitions come and go.
        for step in range(200):
            if step % 50 == 0:
                shuffled = list(NODES)
                sim.random.shuffle(shuffled)
                cut = sim.random.randint(1, 4)
                network.partition([shuffled[:cut], shuffled[cut:]])
            if step % 50 == 25:
                network.heal()
            name = sim.random.choice(NODES)
            counter = sim.random.choice(COUNTERS)
            amount = sim.random.randint(-3, 10)
            nodes[name].replica.increment(counter, amount)
            acknowledged[counter] += amount
            await asyncio.sleep(sim.random.uniform(0, 0.02))
        # Still partitioned: the two sides must not have converged on everything yet, or
        # the partition did nothing.
        network.partition([NODES[:2], NODES[2:]])
        nodes["n0"].replica.increment("views", 1)
        acknowledged["views"] += 1
        await asyncio.sleep(2.0)
        assert nodes["n4"].replica.value("views") != acknowledged["views"]
        # Liveness phase: heal, keep the lossy links, and wait.
        network.heal()
        await asyncio.sleep(3.0)
        for node in nodes.values():
            for counter in COUNTERS:
                assert node.replica.value(counter) == acknowledged[counter], (
                    node.replica.name,
                    counter,
                )
    finally:
        for node in nodes.values():
            await node.stop()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_replicas_converge_to_acknowledged_sum_after_heal(seed: int) -> None:
    run_simulation(scenario, seed)


async def malformed(sim: Simulation) -> None:
    replica = GossipReplica("a", ["b"], rng=random.Random(0))
    node = GossipNode(replica, sim.network.transport("a"))
    other = sim.network.transport("b")
    replica.increment("x", 4)
    for junk in [
        None,
        {"kind": "push"},
        {"kind": "push", "counters": {"x": [{"a": -5}, {}]}},
        {"kind": "nope", "counters": {}},
    ]:
        await other.send("a", junk)
    await asyncio.sleep(0.1)
    assert node.rejected_messages == 4
    assert replica.value("x") == 4


def test_malformed_gossip_is_dropped_and_changes_nothing() -> None:
    run_simulation(malformed, 0)
