"""Two durable counters server processes (``--data-dir``) gossiping: PN-Counters, distinct
counts and heavy hitters replicate between them, and survive both nodes going down at once,
one stopped with SIGTERM and one killed with -9 (the state comes back from each node's own
snapshot and log)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from blocks.counters.client import CountersClient
from blocks.testing import ProcessCluster
from blocks.testing.servers import counters_spec

pytestmark = pytest.mark.process

CONVERGE_TIMEOUT_S = 60.0
NODES = ["n1", "n2"]


async def _load(cluster: ProcessCluster) -> None:
    async with CountersClient(cluster.address("n1"), token=cluster.token) as one:
        for _ in range(10):
            await one.increment("views", 3)
        await one.add_distinct("users", [f"a{k}" for k in range(1000)])
        await one.add_frequent("words", ["x"] * 50 + ["y"] * 20)
    async with CountersClient(cluster.address("n2"), token=cluster.token) as two:
        for _ in range(5):
            await two.increment("views", -1)
        await two.add_distinct("users", [f"b{k}" for k in range(500)])
        await two.add_frequent("words", ["x"] * 30 + ["z"] * 10)


async def _view(cluster: ProcessCluster, name: str) -> tuple[int, int, list[tuple[bytes, int]]]:
    async with CountersClient(cluster.address(name), token=cluster.token) as client:
        return (
            await client.value("views"),
            await client.count_distinct("users"),
            await client.top_k("words", 5),
        )


def _converged(cluster: ProcessCluster) -> list[tuple[int, int, list[tuple[bytes, int]]]]:
    """Poll until both nodes show the whole history; the last views on timeout."""
    deadline = time.monotonic() + CONVERGE_TIMEOUT_S
    while True:
        views = [asyncio.run(_view(cluster, name)) for name in NODES]
        if all(view == _expected(views[0][1]) for view in views):
            return views
        if time.monotonic() > deadline:
            return views
        time.sleep(0.2)


def _expected(distinct: int) -> tuple[int, int, list[tuple[bytes, int]]]:
    return (25, distinct, [(b"x", 80), (b"y", 20), (b"z", 10)])


def test_counters_and_sketches_replicate_and_survive_restarts(tmp_path: Path) -> None:
    with ProcessCluster(counters_spec(durable=True), NODES, tmp_path) as cluster:
        cluster.start_all()
        asyncio.run(_load(cluster))
        views = _converged(cluster)
        distinct = views[0][1]
        assert abs(distinct - 1500) <= 0.05 * 1500
        assert views == [_expected(distinct)] * 2, views

        # Both down at once, so neither keeps the state for the other: n1 stopped with
        # SIGTERM (it writes a snapshot), n2 killed with -9 (only its log survives).
        cluster.terminate("n1")
        cluster.kill("n2")
        cluster.start_all()
        assert asyncio.run(_view(cluster, "n1")) == views[0]  # its snapshot holds it all
        assert _converged(cluster) == views  # n2: its own log, then gossip

        async def more() -> int:
            async with CountersClient(cluster.address("n2"), token=cluster.token) as two:
                return await two.increment("views", 5)

        assert asyncio.run(more()) == 30  # n2's own entry continued, not restarted
