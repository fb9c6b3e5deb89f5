"""``blocks demo`` part: gossiping counters heal a partition; sketches count and rank."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from blocks.core.memory_network import LinkConfig, MemoryNetwork
from blocks.counters.client import CountersClient
from blocks.counters.gossip import GossipNode, GossipReplica
from blocks.counters.service import build_server

__all__ = ["demo"]

NAMES = ["a", "b", "c"]


async def demo(say: Callable[[str], None]) -> None:
    network = MemoryNetwork(seed=7, default_link=LinkConfig(delay_ms=(1, 5), loss=0.2))
    nodes = [
        GossipNode(
            GossipReplica(name, [p for p in NAMES if p != name], rng=random.Random(name)),
            network.transport(name),
            interval_s=0.02,
        )
        for name in NAMES
    ]
    for node in nodes:
        node.start()
    try:
        network.partition([["a"], ["b", "c"]])
        say("partition {a} | {b, c}; 20% of messages lost")
        acknowledged = 0
        for k in range(30):
            nodes[k % 3].replica.increment("views", 1 + k % 4)
            acknowledged += 1 + k % 4
        await asyncio.sleep(0.5)
        views = [node.replica.value("views") for node in nodes]
        say(f"during the partition each replica sees: {dict(zip(NAMES, views, strict=True))}")
        network.heal()
        await asyncio.sleep(0.5)
        views = [node.replica.value("views") for node in nodes]
        say(
            f"after healing: {dict(zip(NAMES, views, strict=True))} (acknowledged total {acknowledged})"
        )
    finally:
        for node in nodes:
            await node.stop()
    server, _ = build_server("demo")
    await server.start()
    try:
        async with CountersClient(server.address) as client:
            visitors = [f"visitor-{k % 50_000}" for k in range(100_000)]
            for start in range(0, len(visitors), 10_000):
                estimate = await client.add_distinct("visitors", visitors[start : start + 10_000])
            say(f"HyperLogLog: 100,000 visits by 50,000 visitors -> estimate {estimate:,}")
            rng = random.Random(1)
            tags = [f"#tag{int(rng.paretovariate(1.2)) % 500}" for _ in range(20_000)]
            for start in range(0, len(tags), 10_000):
                await client.add_frequent("tags", tags[start : start + 10_000])
            top = await client.top_k("tags", 3)
            say("trending: " + ", ".join(f"{item.decode()} ~{count}" for item, count in top))
    finally:
        await server.stop(grace_s=1.0)
