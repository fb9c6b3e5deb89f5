"""The kv part of ``blocks demo``: three nodes on 127.0.0.1, a node killed, hinted handoff
and read repair.

The cluster keeps N=2 copies of each key (W=2, R=1), so the third node is the spare that
takes a dead node's writes with a hint. Killing a node and restarting it before the others
notice leaves it stale without hints; reads with R=2 then repair it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from blocks.kv.local_cluster import LocalCluster

__all__ = ["demo"]


def _counts(cluster: LocalCluster) -> str:
    return ", ".join(
        f"{name}: {len(node.core.objects)} keys/{len(node.core.hints)} hints"
        for name, node in sorted(cluster.nodes.items())
        if node.running
    )


def _missing(cluster: LocalCluster, name: str, keys: list[bytes]) -> int:
    node = cluster.nodes[name]
    return sum(
        1 for k in keys if name in node._ring.preference_list(k, 2) and k not in node.core.objects
    )


async def demo(say: Callable[[str], None]) -> None:
    async with LocalCluster(
        nodes=3, replicas=2, read_quorum=1, write_quorum=2, transport="tcp", token="demo"
    ) as cluster:
        ports = ", ".join(f"{n}=127.0.0.1:{p}" for n, p in sorted(cluster._ports.items()))
        say(f"3 kv nodes (N=2, R=1, W=2) on {ports}")
        client = cluster.client()
        keys = [b"user:%d" % i for i in range(300)]
        started = time.perf_counter()
        for key in keys:
            await client.put(key, b"profile of " + key)
        elapsed = time.perf_counter() - started
        say(f"wrote {len(keys)} keys in {elapsed * 1000:.0f} ms; {_counts(cluster)}")

        await cluster.crash("n3")
        await asyncio.sleep(1.0)  # the failure detector notices
        found = sum([(await client.get(k)).value is not None for k in keys])
        say(f"killed n3; reads still served: {found}/{len(keys)} keys found")
        more = [b"order:%d" % i for i in range(100)]
        for key in more:
            await client.put(key, b"pending")
        say(f"wrote {len(more)} more while n3 was down (sloppy quorum): {_counts(cluster)}")

        await cluster.restart("n3")
        for _ in range(100):
            if not any(node.core.hints for node in cluster.nodes.values()):
                break
            await asyncio.sleep(0.05)
        say(f"restarted n3; hinted handoff gave its writes back: {_counts(cluster)}")

        await cluster.crash("n3")
        late = [b"cart:%d" % i for i in range(60)]
        for key in late:  # n3 looks healthy still; its copies are lost on the way
            await client.put(key, b"in-cart", w=1)
            await asyncio.sleep(0.004)
        await cluster.restart("n3")
        await cluster.wait_healthy()
        stale = _missing(cluster, "n3", late)
        say(f"n3 bounced before anyone noticed: it misses {stale} keys it should hold")
        for key in late:
            await client.get(key, r=2)
        await asyncio.sleep(0.2)
        say(f"reads with R=2 repaired it: n3 now misses {_missing(cluster, 'n3', late)}")
