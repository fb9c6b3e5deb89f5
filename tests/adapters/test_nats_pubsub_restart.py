"""``NatsPubSub`` across a restart of the nats-server: while it is down calls raise the
block's ``Unavailable`` (never a nats exception); once it is back, every acknowledged record
and commit is there (JetStream file storage)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from blocks.core.clock import ManualClock
from blocks.core.errors import Timeout, Unavailable
from blocks.testing.engines import NatsServer, nats_missing

pytestmark = pytest.mark.skipif(nats_missing() is not None, reason=str(nats_missing()))

DEADLINE_S = 30.0
T = TypeVar("T")


async def _until(condition: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not condition():
        assert loop.time() < deadline, f"not {what} within {DEADLINE_S} s"
        await asyncio.sleep(0.05)


async def _retrying(call: Callable[[], Awaitable[T]]) -> T:
    """``call()`` once JetStream answers again (it recovers its streams after a start)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while True:
        try:
            return await call()
        except (Unavailable, Timeout):
            assert loop.time() < deadline, "JetStream did not answer after the restart"
            await asyncio.sleep(0.1)


def test_acknowledged_records_survive_a_server_restart(tmp_path: Path) -> None:
    from blocks.pubsub.adapters.nats import NatsPubSub

    async def scenario(server: NatsServer) -> None:
        pubsub = await NatsPubSub.open(server.url, clock=ManualClock(wall_ms=1_000))
        try:
            await pubsub.create_topic("orders", partitions=2)
            acked = [await pubsub.produce("orders", b"v%d" % i, key=b"k%d" % i) for i in range(20)]
            member = await pubsub.join_group("g", "orders", "m1")
            await pubsub.commit("g", "m1", member.generation, 0, 3)

            server.stop()
            await _until(lambda: not pubsub.connected, "disconnected")
            with pytest.raises(Unavailable):
                await pubsub.produce("orders", b"lost?", partition=0)
            with pytest.raises(Unavailable):
                await pubsub.fetch("orders", 1, 0)

            server.start()
            await _until(lambda: pubsub.connected, "reconnected")
            for partition in (0, 1):
                records = await _retrying(lambda p=partition: pubsub.fetch("orders", p, 0, 100))
                expected = [
                    (offset, b"v%d" % i) for i, (p, offset) in enumerate(acked) if p == partition
                ]
                assert [(r.offset, r.value) for r in records] == expected
            assert await _retrying(lambda: pubsub.committed("g", "orders", 0)) == 3
            partition, offset = await _retrying(
                lambda: pubsub.produce("orders", b"after", partition=0)
            )
            assert offset == sum(1 for p, _ in acked if p == 0), "offsets stay dense"
        finally:
            await pubsub.close()

    with NatsServer(tmp_path / "store") as server:
        asyncio.run(scenario(server))
