"""``NatsPubSub.produce_batch`` pipelines its publishes and still keeps batches in order and
every record exactly once, also when other producers append to the partition meanwhile."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from blocks.testing.engines import NatsServer

nats_adapter = pytest.importorskip("blocks.pubsub.adapters.nats", reason="nats-py not installed")
ACK_WAIT_S: float = pytest.importorskip("blocks.pubsub.adapters.nats_publish").ACK_WAIT_S


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


def test_a_batch_another_producer_broke_does_not_wait_out_its_acks(
    nats_server: NatsServer,
) -> None:
    """Another producer's record lands between this batch's ``stream_info`` and its
    publishes, so JetStream refuses every record of the batch at once (wrong last sequence,
    then wrong last message id). Those refusals are the batch's own acks: it must see them and
    fall back at once, not wait ``ACK_WAIT_S`` for acks that will never come (nats-py 2.16
    loses error replies to ``publish_async``, so its futures never finish)."""
    namespace = f"b{uuid.uuid4().hex[:10]}_"

    async def scenario() -> None:
        mine = await nats_adapter.NatsPubSub.open(nats_server.url, namespace=namespace)
        other = await nats_adapter.NatsPubSub.open(nats_server.url, namespace=namespace)
        try:
            await mine.create_topic("t", partitions=1)
            publisher = mine._publisher
            real_stream_info = publisher._js.stream_info

            async def stream_info_then_other_record(name: str) -> object:
                info = await real_stream_info(name)
                await other.produce("t", b"other", partition=0)
                return info

            publisher._js.stream_info = stream_info_then_other_record
            started = time.monotonic()
            first = await mine.produce_batch("t", 0, [(None, f"m-{i}".encode()) for i in range(20)])
            elapsed_s = time.monotonic() - started
            # a stall is at least ACK_WAIT_S long; the fallback itself takes milliseconds
            assert elapsed_s < ACK_WAIT_S, f"the batch waited {elapsed_s:.1f} s for its acks"
            assert first == 1
            records = await mine.fetch("t", 0, 0, max_messages=100)
            assert [r.value for r in records] == [b"other"] + [f"m-{i}".encode() for i in range(20)]
        finally:
            await mine.close()
            await other.close()

    asyncio.run(scenario())


def test_two_concurrent_producers_never_wait_out_the_ack_wait(nats_server: NatsServer) -> None:
    """Two producers write batches to one partition at once; batches that the other's records
    break are refused at once and published again, none waits ``ACK_WAIT_S``."""
    namespace = f"b{uuid.uuid4().hex[:10]}_"

    async def scenario() -> None:
        producers = [
            await nats_adapter.NatsPubSub.open(nats_server.url, namespace=namespace)
            for _ in range(2)
        ]
        durations_s: list[float] = []
        try:
            await producers[0].create_topic("t", partitions=1)

            async def batches(who: int) -> None:
                for batch in range(15):
                    entries = [(None, f"{who}-{batch}-{i}".encode()) for i in range(20)]
                    started = time.monotonic()
                    await producers[who].produce_batch("t", 0, entries)
                    durations_s.append(time.monotonic() - started)

            await asyncio.gather(batches(0), batches(1))
            assert max(durations_s) < ACK_WAIT_S, f"slowest batch {max(durations_s):.1f} s"
            records = await producers[0].fetch("t", 0, 0, max_messages=1_000)
            values = [r.value.decode() for r in records]
            assert len(values) == len(set(values)) == 2 * 15 * 20
        finally:
            for producer in producers:
                await producer.close()

    asyncio.run(scenario())
