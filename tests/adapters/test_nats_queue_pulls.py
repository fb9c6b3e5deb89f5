"""``NatsQueue``'s concurrent receives: each fetches through a pull subscription of its own
(``blocks.queue.adapters.nats_pulls``), so one receive's pull, expiring, never ends
another's wait; and the pool of subscriptions stays within its bound."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from blocks.testing.engines import NatsServer

nats_queue = pytest.importorskip("blocks.queue.adapters.nats", reason="nats-py not installed")
from blocks.queue.adapters import nats_pulls  # noqa: E402

DEADLINE_S = 30.0


def test_a_short_receive_does_not_end_a_long_ones_wait(nats_server: NatsServer) -> None:
    # With one shared subscription the expiry notice of the short pulls reached the long
    # receive, which then returned nothing at once although it was asked to wait.
    async def main() -> None:
        queue = await nats_queue.NatsQueue.open(
            nats_server.url, namespace=f"q{uuid.uuid4().hex[:10]}_"
        )
        try:
            await queue.create_queue("jobs")
            long_wait = asyncio.create_task(queue.receive("jobs", wait_ms=int(DEADLINE_S * 1000)))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + DEADLINE_S
            while "jobs" not in queue._pulls or queue._pulls["jobs"].size < 1:
                assert loop.time() < deadline  # the long pull is on its way
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # its pull request is at the server (any wait will do)
            for _ in range(5):
                assert await queue.receive("jobs", wait_ms=0) == []
                assert not long_wait.done(), "a short receive ended the long one's wait"
            await queue.send("jobs", b"work")
            got = await asyncio.wait_for(long_wait, DEADLINE_S)
            assert [message.body for message in got] == [b"work"]
        finally:
            await queue.close()

    asyncio.run(main())


def test_the_pool_lends_each_borrower_its_own_and_stays_bounded() -> None:
    async def main() -> None:
        made: list[Any] = []

        async def subscribe() -> Any:
            made.append(object())
            return made[-1]

        pool = nats_pulls.PullPool(subscribe, size_max=2)
        async with pool.borrow() as first, pool.borrow() as second:
            assert first is not second
            third = asyncio.create_task(_hold(pool))
            await asyncio.sleep(0)
            assert not third.done(), "a third borrower waits while two are lent"
        assert await asyncio.wait_for(third, DEADLINE_S) in (first, second)
        assert pool.size == 2 == len(made)

    asyncio.run(main())


async def _hold(pool: Any) -> Any:
    async with pool.borrow() as subscription:
        return subscription
