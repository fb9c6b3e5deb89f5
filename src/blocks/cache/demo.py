"""``blocks demo`` part for the cache: policies on hostile traces, then a 3-node cluster.

1. Hit ratios of LRU, ARC and adaptive W-TinyLFU against Bélády's optimum on three small
   generated traces (a loop, a recency burst, skew with scans).
2. Three cache nodes on 127.0.0.1 (gRPC, OS-chosen ports), a cluster client, a read-through
   loader that 100 concurrent callers share, then one node is stopped: its keys become
   misses, reloaded once each, and nothing fails.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from blocks.cache.client import CacheClient
from blocks.cache.cluster import ClusterClient
from blocks.cache.optimal import optimal_hits
from blocks.cache.service import build_server
from blocks.cache.simulate import hit_count, make_policy
from blocks.cache.workloads import loop_trace, recency_trace, zipf_with_scans

__all__ = ["demo"]


def _policies(say: Callable[[str], None]) -> None:
    capacity = 100
    traces = {
        "loop over 150 keys": loop_trace(15_000, 150),
        "recency burst": recency_trace(15_000, random.Random(3)),
        "skew + scans": zipf_with_scans(15_000, random.Random(1), hot_keys=2000, scan_every=200),
    }
    say(f"hit ratios, cache of {capacity} entries:")
    say(f"  {'trace':<20}{'lru':>8}{'arc':>8}{'wtinylfu':>10}{'optimal':>9}")
    for name, trace in traces.items():
        cells = [
            hit_count(make_policy(policy, capacity), trace) / len(trace)
            for policy in ("lru", "arc", "wtinylfu")
        ]
        best = optimal_hits(trace, capacity) / len(trace)
        lru, arc, adaptive = (f"{100 * cell:.1f}%" for cell in cells)
        say(f"  {name:<20}{lru:>8}{arc:>8}{adaptive:>10}{100 * best:>8.1f}%")


async def _cluster(say: Callable[[str], None]) -> None:
    servers = [build_server(capacity=10_000)[0] for _ in range(3)]
    for server in servers:
        await server.start()
    clients = {server.address: CacheClient(server.address, timeout_s=2.0) for server in servers}
    try:
        say(f"3 cache nodes: {', '.join(clients)}")
        cluster = ClusterClient(clients, down_for_s=30.0)
        loads = 0

        async def load(key: str) -> str:
            nonlocal loads
            loads += 1
            await asyncio.sleep(0.05)  # a slow database
            return f"profile of {key}"

        inflight: dict[str, asyncio.Future[str]] = {}

        async def fetch(key: str) -> str:
            value = await cluster.get(key)
            if value is None:
                value = await load(key)
                await cluster.put(key, value, ttl=60)
            return str(value)

        async def read_through(key: str) -> str:
            # Single flight: every concurrent caller of a key shares one fetch (and one load).
            future = inflight.get(key)
            if future is None:
                future = inflight[key] = asyncio.ensure_future(fetch(key))
                future.add_done_callback(lambda _: inflight.pop(key, None))
            return await future

        await asyncio.gather(*(read_through("user:1") for _ in range(100)))
        say(f"100 concurrent reads of a cold key -> {loads} load")
        keys = [f"user:{k}" for k in range(200)]
        await asyncio.gather(*(read_through(key) for key in keys))
        loads = 0
        await asyncio.gather(*(read_through(key) for key in keys))
        say(f"200 warm reads -> {loads} loads")
        victim = servers[2]
        lost = sum(cluster.owner(key) == victim.address for key in keys)
        await victim.stop(grace_s=0.5)
        say(f"stopped {victim.address} (owner of {lost} keys)")
        loads = 0
        results = await asyncio.gather(*(read_through(key) for key in keys))
        say(f"200 reads -> {len(results)} answers, {loads} reloads, 0 errors")
    finally:
        for client in clients.values():
            await client.close()
        for server in servers:
            await server.stop(grace_s=0.5)


async def demo(say: Callable[[str], None]) -> None:
    _policies(say)
    await _cluster(say)
