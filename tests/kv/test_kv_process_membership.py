"""Anti-entropy and a join, with ``blocks kv serve`` processes.

Three nodes, N3/R2/W2. Anti-entropy: node c is killed with ``kill -9`` and writes go on
without it; with three nodes there is no spare to hold a hint, so only anti-entropy (or read
repair, which the test avoids by not reading) can bring c up to date after its restart. The
test waits until c holds every acknowledged key and its status counts anti-entropy repairs.

Join: a fourth node d starts knowing only a, while a writer keeps writing. Afterwards every
node holds exactly the keys it is home for on the four-node ring (d received its ranges, the
others dropped what they no longer own), and every acknowledged write reads back.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from kv_processes import ProcessCluster, wait_all_healthy

from blocks.core.errors import BlocksError
from blocks.core.hashing import HashRing
from blocks.kv.client import KVClient, connect

NODES = ("a", "b", "c")
VNODES = 64  # NodeConfig's default, which ``blocks kv serve`` uses
REPLICAS = 3
CONVERGE_S = 60.0  # generous: only a failing run waits this long


async def _write(
    client: KVClient,
    first: int,
    last: int,
    acked: dict[bytes, bytes],
    until: asyncio.Event | None = None,
) -> None:
    for i in range(first, last):
        if until is not None and until.is_set():
            return
        key, value = b"key-%04d" % i, b"value-%d" % i
        try:
            await client.put(key, value, timeout_s=3.0)
            acked[key] = value
        except BlocksError:
            pass  # not acknowledged: nothing is promised about it


async def _held(client: KVClient, node: str) -> set[bytes]:
    return set(await client.transport.request(node, ["keys", 100_000], 5.0))


async def _eventually(check: object, what: str) -> None:
    """Poll the async predicate ``check`` until it holds or ``CONVERGE_S`` passes."""
    deadline = time.monotonic() + CONVERGE_S
    while True:
        if await check():  # type: ignore[operator]
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {CONVERGE_S} s: {what}")
        await asyncio.sleep(0.2)


async def _anti_entropy(cluster: ProcessCluster, client: KVClient) -> dict[bytes, bytes]:
    acked: dict[bytes, bytes] = {}
    await _write(client, 0, 60, acked)
    cluster.kill("c")
    missed: dict[bytes, bytes] = {}
    await _write(client, 60, 160, missed)
    assert len(missed) >= 90, len(missed)
    acked.update(missed)
    cluster.start("c")
    await wait_all_healthy(client, set(NODES))

    async def c_caught_up() -> bool:
        return await _held(client, "c") >= set(acked)

    await _eventually(c_caught_up, "c holds every acknowledged key")
    status = await client.transport.request("c", ["status"], 5.0)
    assert status["counters"]["anti_entropy_repairs"] > 0, status
    return acked


async def _join(cluster: ProcessCluster, client: KVClient, acked: dict[bytes, bytes]) -> None:
    before = len(acked)
    done = asyncio.Event()
    writer = asyncio.create_task(_write(client, 160, 2_000, acked, until=done))
    await asyncio.sleep(0.2)
    await asyncio.to_thread(cluster.start, "d", ["a"])  # d joins mid-writes
    joined_at = len(acked)
    await asyncio.sleep(1.0)  # writes go on while d's gossip spreads and ranges move
    deadline = time.monotonic() + CONVERGE_S  # at load 13 that second held only 7 acks
    while len(acked) <= joined_at + 20 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    done.set()
    await writer
    assert joined_at > before and len(acked) > joined_at + 20, (before, joined_at, len(acked))
    members = ("a", "b", "c", "d")
    await wait_all_healthy(client, set(members))
    ring = HashRing(list(members), vnodes=VNODES)
    home = {key: set(ring.preference_list(key, REPLICAS)) for key in acked}
    assert any("d" in nodes for nodes in home.values())

    async def placed_exactly() -> bool:
        for node in members:
            held = await _held(client, node)
            if any(node not in ring.preference_list(key, REPLICAS) for key in held):
                return False  # a copy it no longer owns was not dropped yet
            if not {key for key, nodes in home.items() if node in nodes} <= held:
                return False  # a range it now owns has not arrived yet
        return True

    await _eventually(placed_exactly, "every node holds exactly the keys it is home for")
    for key, value in acked.items():
        assert (await client.get(key)).siblings == (value,), key


@pytest.mark.process
def test_anti_entropy_and_a_join_with_processes(tmp_path: Path) -> None:
    cluster = ProcessCluster(tmp_path, NODES)
    try:
        cluster.start_all()

        async def main() -> None:
            client = await connect(cluster.addresses(), timeout_s=3.0)
            try:
                await wait_all_healthy(client, set(NODES))
                acked = await _anti_entropy(cluster, client)
                await _join(cluster, client, acked)
            finally:
                await client.close()

        asyncio.run(asyncio.wait_for(main(), 90.0))
    finally:
        cluster.stop_all()
