"""A burst larger than a node's call queue through the cluster client: callers wait for room
(backpressure), and a full queue never counts as a failed node."""

from __future__ import annotations

import asyncio

import pytest
from gossip_nodes import gossiping_nodes

from blocks.cache import LRUCache, dataclient
from blocks.cache.cluster import ClusterClient, LocalNode
from blocks.cache.dataclient import DataNode
from blocks.cache.discovery import MemberCluster
from blocks.cache.service import build_server
from blocks.core.errors import Overloaded, Unavailable
from blocks.testing.ports import free_ports

TOKEN = "data-token"
BURST = 10_000  # well past QUEUE_CALLS_MAX for either of two nodes


def test_a_burst_past_the_queue_bound_waits_and_keeps_every_node_up() -> None:
    async def main() -> None:
        async with (
            # 20,000 calls in one loop that also runs both nodes and their gossip: a loop
            # stalled past the failure bound (3 s; a full suite's large heap) makes a node
            # look dead and its keys miss (with a 200 ms bound this test fails that way).
            # A crashed node still shows, as failed calls.
            gossiping_nodes(2, capacity=4 * BURST, token=TOKEN, dead_after_ms=30_000) as (
                addresses,
                _,
            ),
            await MemberCluster.connect(addresses, token=TOKEN, timeout_s=30.0) as c,
        ):
            assert c.data_path_nodes == ["n0", "n1"]
            keys = [f"k{i}" for i in range(BURST)]
            await asyncio.gather(*(c.put(key, i, ttl=600) for i, key in enumerate(keys)))
            assert c.live_nodes == ["n0", "n1"]
            got = await asyncio.gather(*(c.get(key) for key in keys))
            assert got == list(range(BURST))
            assert c.live_nodes == ["n0", "n1"]
            mixed = await asyncio.gather(
                *(c.get(key) for key in keys), *(c.put(key, -1) for key in keys)
            )
            assert all(value is not None for value in mixed[:BURST])
            assert c.live_nodes == ["n0", "n1"] and c.misses_from_failures == 0
            assert await c.get("k1") == -1

    asyncio.run(asyncio.wait_for(main(), 120))


def test_a_call_that_waits_too_long_for_room_is_overloaded_and_the_node_stays_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dataclient, "QUEUE_CALLS_MAX", 4)

    async def main() -> None:
        port = free_ports(1)[0]
        server, service = build_server(
            capacity=100, token=TOKEN, name="solo", port=port, leave_drain_s=0.0
        )
        await server.start()
        assert service.data is not None and service.data.advertised is not None
        node = DataNode("solo", service.data.advertised, token=TOKEN, timeout_s=0.2)
        try:
            await node.put("k", b"v")
            # Fill the queue inside one loop turn, so no flush frees room: the next caller
            # waits, and past the timeout gets a clean Overloaded.
            loop = asyncio.get_running_loop()
            held = [loop.create_task(node.get("k")) for _ in range(4)]
            node._flush_scheduled = True  # hold the flush back while the queue is full
            await asyncio.sleep(0)
            with pytest.raises(Overloaded, match="queue"):
                await node.get("k")
            waiting = [loop.create_task(node.get("k")) for _ in range(6)]
            await asyncio.sleep(0)
            waiting[1].cancel()  # a waiter that gives up does not hold room from the rest
            await asyncio.sleep(0)
            node._flush_scheduled = False
            node._maybe_flush_soon()
            assert await asyncio.gather(*held) == [b"v"] * 4
            kept = [task for i, task in enumerate(waiting) if i != 1]
            assert await asyncio.gather(*kept) == [b"v"] * 5
            assert await node.get("k") == b"v"
            # closing fails the callers still waiting for room as Unavailable
            node._flush_scheduled = True
            held = [loop.create_task(node.get("k")) for _ in range(6)]
            await asyncio.sleep(0)
            await node.close()
            results = await asyncio.gather(*held, return_exceptions=True)
            assert all(isinstance(result, Unavailable) for result in results)
        finally:
            await node.close()
            await server.stop(grace_s=0.2)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_overloaded_reaches_the_caller_and_does_not_mark_the_node_down() -> None:
    class Busy(LocalNode):
        busy = True

        def _check(self) -> None:
            super()._check()
            if self.busy:
                raise Overloaded("queue full")

    async def main() -> None:
        nodes = {"a": Busy(LRUCache(100)), "b": Busy(LRUCache(100))}
        cluster = ClusterClient(nodes)
        with pytest.raises(Overloaded):
            await cluster.put("k", 1)
        with pytest.raises(Overloaded):
            await cluster.get("k")
        assert cluster.live_nodes == ["a", "b"] and cluster.misses_from_failures == 0
        for node in nodes.values():
            node.busy = False
        await cluster.put("k", 1)
        assert await cluster.get("k") == 1

    asyncio.run(main())
