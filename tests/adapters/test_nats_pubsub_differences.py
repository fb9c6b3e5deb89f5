"""Facts about ``NatsPubSub`` that differ from ``LocalBroker`` (each one is in
docs/adapters.md), and its errors: nats exceptions never escape."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from blocks.core.clock import ManualClock
from blocks.core.errors import InvalidArgument, NotFound
from blocks.pubsub.local import LocalBroker
from blocks.testing.engines import NatsServer

nats_adapter = pytest.importorskip("blocks.pubsub.adapters.nats", reason="nats-py not installed")


def _run(url: str, scenario: Callable[[Callable[..., Awaitable[Any]]], Awaitable[None]]) -> None:
    """Run ``scenario(open_adapter)`` in a fresh namespace; close what it opened."""
    namespace = f"d{uuid.uuid4().hex[:10]}_"

    async def main() -> None:
        opened: list[Any] = []

        async def open_adapter(**kwargs: Any) -> Any:
            pubsub = await nats_adapter.NatsPubSub.open(url, namespace=namespace, **kwargs)
            opened.append(pubsub)
            return pubsub

        try:
            await scenario(open_adapter)
        finally:
            for pubsub in opened:
                await pubsub.close()

    asyncio.run(main())


def test_group_membership_is_per_adapter_instance(nats_server: NatsServer) -> None:
    """Two adapters on one namespace do not see each other's members: both get every
    partition (LocalBroker splits them). Members of one group must share one adapter."""

    async def scenario(open_adapter: Callable[..., Awaitable[Any]]) -> None:
        first, second = await open_adapter(), await open_adapter()
        await first.create_topic("t", partitions=2)
        a = await first.join_group("g", "t", "a")
        b = await second.join_group("g", "t", "b")
        assert a.partitions == b.partitions == (0, 1)
        local = LocalBroker(clock=ManualClock())
        await local.create_topic("t", partitions=2)
        await local.join_group("g", "t", "a")
        assert (await local.join_group("g", "t", "b")).partitions == (1,)

    _run(nats_server.url, scenario)


def test_timestamps_are_the_producers_clock(nats_server: NatsServer) -> None:
    """A record's timestamp is its producer's clock, so two producers with skewed clocks give
    one partition timestamps that go back (LocalBroker stamps with the broker's clock)."""

    async def scenario(open_adapter: Callable[..., Awaitable[Any]]) -> None:
        ahead = await open_adapter(clock=ManualClock(wall_ms=9_000))
        behind = await open_adapter(clock=ManualClock(wall_ms=1_000))
        await ahead.create_topic("t")
        await ahead.produce("t", b"x")
        await behind.produce("t", b"y")
        stamps = [r.timestamp_ms for r in await ahead.fetch("t", 0, 0)]
        assert stamps == [9_000, 1_000]

    _run(nats_server.url, scenario)


def test_compacted_topics_are_refused(nats_server: NatsServer) -> None:
    async def scenario(open_adapter: Callable[..., Awaitable[Any]]) -> None:
        pubsub = await open_adapter()
        with pytest.raises(InvalidArgument, match="compact"):
            await pubsub.create_topic("t", compact=True)

    _run(nats_server.url, scenario)


def test_a_stream_deleted_behind_the_adapter_is_not_found(nats_server: NatsServer) -> None:
    """The partition count is cached; a partition stream removed by an operator afterwards
    gives ``NotFound`` from fetch, end_offsets and produce, not nats' own NotFoundError."""

    async def scenario(open_adapter: Callable[..., Awaitable[Any]]) -> None:
        pubsub = await open_adapter()
        await pubsub.create_topic("t", partitions=2)
        await pubsub.produce("t", b"x", partition=1)
        await pubsub._js.delete_stream(pubsub._stream("t", 1))  # the operator's act
        with pytest.raises(NotFound):
            await pubsub.fetch("t", 1, 0)
        with pytest.raises(NotFound):
            await pubsub.end_offsets("t", 1)
        with pytest.raises(NotFound):
            await pubsub.produce("t", b"y", partition=1)

    _run(nats_server.url, scenario)


def test_a_retried_publish_is_stored_once(nats_server: NatsServer) -> None:
    """The idempotent producer: the same ``Nats-Msg-Id`` again returns the first offset."""

    async def scenario(open_adapter: Callable[..., Awaitable[Any]]) -> None:
        pubsub = await open_adapter()
        await pubsub.create_topic("t")
        headers = {"Nats-Msg-Id": "p:0:0"}
        subject = pubsub._subject("t", 0)
        first = await pubsub._js.publish(subject, b"x", headers=headers)
        again = await pubsub._js.publish(subject, b"x", headers=headers)
        assert again.duplicate and again.seq == first.seq
        assert await pubsub.end_offsets("t", 0) == (0, 1)

    _run(nats_server.url, scenario)


def test_a_consumer_reads_and_commits_through_the_adapter(nats_server: NatsServer) -> None:
    """``consumer()`` is the generic group member over the adapter: it yields every record
    of its partitions and commits where it stopped (the offsets land in the KV bucket)."""

    async def scenario(open_adapter: Callable[..., Awaitable[Any]]) -> None:
        pubsub = await open_adapter()
        await pubsub.create_topic("t", partitions=2)
        sent = {await pubsub.produce("t", b"v%d" % i) for i in range(6)}
        consumer = pubsub.consumer("t", "g", wait_ms=50)
        seen: set[tuple[int, int]] = set()

        async def read() -> None:
            async for record in consumer:
                seen.add((record.partition, record.offset))
                if seen == sent:
                    return

        await asyncio.wait_for(read(), timeout=30.0)
        assert await consumer.commit() == {0: 3, 1: 3}
        assert [await pubsub.committed("g", "t", p) for p in (0, 1)] == [3, 3]
        await consumer.close()

    _run(nats_server.url, scenario)
