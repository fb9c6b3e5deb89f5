"""``NatsPubSub.produce_batch`` pipelines its publishes and still keeps batches in order and
every record exactly once, also when other producers append to the partition meanwhile."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from blocks.testing.engines import NatsServer

nats_adapter = pytest.importorskip("blocks.pubsub.adapters.nats", reason="nats-py not installed")


def test_batches_are_in_order_and_whole_beside_concurrent_producers(
    nats_server: NatsServer,
) -> None:
    namespace = f"b{uuid.uuid4().hex[:10]}_"

    async def scenario() -> None:
        producers = [
            await nats_adapter.NatsPubSub.open(nats_server.url, namespace=namespace)
            for _ in range(3)
        ]
        try:
            await producers[0].create_topic("t", partitions=1)
            first = await producers[0].produce_batch(
                "t", 0, [(None, f"solo-{i}".encode()) for i in range(100)]
            )
            assert first == 0
            solo = await producers[0].fetch("t", 0, 0, max_messages=100)
            assert [r.value for r in solo] == [f"solo-{i}".encode() for i in range(100)]

            async def batches(who: int) -> None:
                for batch in range(4):
                    entries = [(None, f"{who}-{batch}-{i}".encode()) for i in range(25)]
                    await producers[who].produce_batch("t", 0, entries)

            await asyncio.gather(*(batches(who) for who in range(3)))
            records = await producers[0].fetch("t", 0, 100, max_messages=1_000)
            values = [r.value.decode() for r in records]
            assert len(values) == len(set(values)) == 3 * 4 * 25  # each once
            for who in range(3):  # each producer's records in the order it sent them
                mine = [v for v in values if v.startswith(f"{who}-")]
                expected = [f"{who}-{b}-{i}" for b in range(4) for i in range(25)]
                assert mine == expected
            assert [r.offset for r in records] == list(range(100, 100 + len(records)))
        finally:
            for producer in producers:
                await producer.close()

    asyncio.run(scenario())
