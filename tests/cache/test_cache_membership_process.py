"""A cache cluster of real processes whose membership moves: a join, a leave, a kill -9.

What a client may see while nodes come and go (docs/cache.md, "Cluster membership"): misses
for the keys that moved, never a value from before a move, never an error on get or put.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from blocks.cache.client import CacheClient
from blocks.cache.discovery import MemberCluster
from blocks.cache.membership import Status, View
from blocks.testing import ProcessCluster
from blocks.testing.servers import cache_spec

SETTLE_TIMEOUT_S = 90.0  # generous: a loaded machine gossips slowly
KEYS = [f"k{i}" for i in range(300)]


@pytest.fixture
def cluster() -> Iterator[ProcessCluster]:
    nodes = ProcessCluster(cache_spec(capacity=10_000), ["n1", "n2", "n3", "n4"])
    try:
        yield nodes
    finally:
        nodes.remove()


async def _views(nodes: ProcessCluster, names: list[str]) -> dict[str, list[str]]:
    seen = {}
    for name in names:
        async with CacheClient(nodes.address(name), token=nodes.token, timeout_s=10.0) as c:
            records, _ = await c.members()
        seen[name] = sorted(m.name for m in records if m.status is Status.ALIVE)
    return seen


async def _settle(nodes: ProcessCluster, running: list[str]) -> None:
    """Wait until every running node's view is exactly the running nodes."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        views = await _views(nodes, running)
        if all(view == sorted(running) for view in views.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"views did not settle on {running}: {views}")
        await asyncio.sleep(0.1)


class Load:
    """Gets and puts from a second client while the membership moves: every call must return,
    and a get returns only a value that was put for that key (or a miss)."""

    def __init__(self, client: MemberCluster) -> None:
        self.client = client
        self.written: dict[str, set[int]] = {f"load{i}": set() for i in range(40)}
        self.calls = 0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        version = 0
        while not self.stop.is_set():
            for key, values in self.written.items():
                version += 1
                values.add(version)
                await self.client.put(key, version)
                got = await self.client.get(key)
                assert got is None or got in values, f"{key}: {got} was never put"
                self.calls += 2
            await asyncio.sleep(0)


def test_join_leave_and_crash_move_keys_without_stale_reads(cluster: ProcessCluster) -> None:
    async def scenario() -> None:
        for name in ("n1", "n2", "n3"):
            await asyncio.to_thread(cluster.start, name)
        await _settle(cluster, ["n1", "n2", "n3"])
        client = await MemberCluster.connect(
            [cluster.address("n1")], token=cluster.token, timeout_s=10.0, refresh_interval_s=0.2
        )
        loader = await MemberCluster.connect(
            [cluster.address("n1")], token=cluster.token, timeout_s=10.0, refresh_interval_s=0.2
        )
        load = Load(loader)
        background = asyncio.create_task(load.run())
        async with client, loader:
            assert client.members == ["n1", "n2", "n3"]
            assert client.data_path_nodes == ["n1", "n2", "n3"]  # data calls on the TCP path
            for i, key in enumerate(KEYS):
                await client.put(key, i)
            assert [await client.get(key) for key in KEYS] == list(range(len(KEYS)))

            # n4 joins: keys that move to it are misses, the others stay hits
            three = View.of(client.view.members)
            await asyncio.to_thread(cluster.start, "n4")
            await _settle(cluster, ["n1", "n2", "n3", "n4"])
            four_ring = View.of([*three.members, ("n4", cluster.address("n4"))]).ring()
            moved = {k for k in KEYS if four_ring.owner(k) == "n4"}
            assert 0.1 < len(moved) / len(KEYS) < 0.45
            after_join = {k: await client.get(k) for k in KEYS}
            assert client.members == ["n1", "n2", "n3", "n4"]
            assert client.data_path_nodes == ["n1", "n2", "n3", "n4"]
            for i, key in enumerate(KEYS):
                assert after_join[key] == (None if key in moved else i), key

            # the moved keys get new values on n4; then n4 leaves: they move back to nodes
            # that held their old values before the join, and must not show them
            for key in moved:
                await client.put(key, "new")
            await asyncio.to_thread(cluster.terminate, "n4")  # SIGTERM: announces its leave
            await _settle(cluster, ["n1", "n2", "n3"])
            for i, key in enumerate(KEYS):
                value = await client.get(key)
                assert value != i or key not in moved, f"{key}: a value from before the move"
                assert value in (None, i) or key in moved, key
            assert client.members == ["n1", "n2", "n3"]

            # kill -9 n2: it is declared dead, its keys become misses, nothing errors
            await asyncio.to_thread(cluster.kill, "n2")
            await _settle(cluster, ["n1", "n3"])
            for key in KEYS:
                await client.put(key, f"v-{key}")
            assert client.members == ["n1", "n3"]
            assert client.data_path_nodes == ["n1", "n3"]  # nothing held open to departed nodes
            assert [await client.get(k) for k in KEYS] == [f"v-{k}" for k in KEYS]

            load.stop.set()
            await background  # raises what the load saw: an error or an invented value
            assert load.calls > 0 and loader.members == ["n1", "n3"]

    asyncio.run(scenario())
