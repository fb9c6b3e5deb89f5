"""The pub-sub contract through gRPC, streaming with credits, consumer groups end to end."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from blocks.core.errors import InvalidArgument, NotFound
from blocks.core.server import Server
from blocks.pubsub.api import PubSub
from blocks.pubsub.batching_producer import ProducerConfig
from blocks.pubsub.client import PubSubClient, connect
from blocks.pubsub.contract import SESSION_TIMEOUT_MS, PubSubContract
from blocks.pubsub.service import build_server


class _Served:
    def __init__(self, client: PubSubClient, server: Server) -> None:
        self._client, self._server = client, server

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def close(self) -> None:
        await self._client.close()
        await self._server.stop(grace_s=1)


class GrpcPubSubContract(PubSubContract):
    async def make_subject(self) -> PubSub:
        server, _ = build_server(None, clock=self.clock, session_timeout_ms=SESSION_TIMEOUT_MS)
        await server.start()
        return _Served(await connect([server.address]), server)  # type: ignore[return-value]


TestGrpcPubSubContract = GrpcPubSubContract.TestCase
TestGrpcPubSubContract.settings = settings(settings.default, max_examples=6, stateful_step_count=25)


def test_subscribe_groups_and_errors(tmp_path: Path) -> None:
    async def main() -> None:
        server, _ = build_server(tmp_path / "data")
        await server.start()
        try:
            async with await connect(server.address) as client:
                await client.create_topic("orders", partitions=2)
                with pytest.raises(NotFound):
                    await client.produce("missing", b"x")
                with pytest.raises(InvalidArgument):
                    await client.produce("orders", b"x" * (2 << 20))
                acked = [
                    await client.produce("orders", f"{i}".encode(), key=b"k") for i in range(50)
                ]
                partition = acked[0][0]
                assert [o for _, o in acked] == list(range(50))
                streamed = []
                async for record in client.subscribe("orders", partition, 10, window=8):
                    streamed.append(record.offset)
                    if len(streamed) == 40:
                        break
                assert streamed == list(range(10, 50))
                when = (await client.fetch("orders", partition, 20, 1))[0].timestamp_ms
                assert await client.offset_for_time("orders", partition, when) <= 20
                consumer = client.consumer("orders", "billing", wait_ms=50)
                seen = []
                async for record in consumer:
                    seen.append(record.value)
                    if len(seen) == 50:
                        break
                assert await consumer.commit() == {partition: 50}
                await consumer.close()
                assert await client.committed("billing", "orders", partition) == 50
        finally:
            await server.stop(grace_s=1)

    asyncio.run(main())


def test_keyless_records_go_round_robin_by_batch() -> None:
    async def main() -> None:
        server, _ = build_server(None)
        await server.start()
        try:
            sticky = ProducerConfig(sticky_bytes=1000)  # 10 records of 100 bytes per partition
            async with await connect(server.address, producer=sticky) as client:
                await client.create_topic("sticky", partitions=3)
                placed = [(await client.produce("sticky", b"v" * 100))[0] for _ in range(60)]
                runs = [placed[i : i + 10] for i in range(0, 60, 10)]
                assert all(len(set(run)) == 1 for run in runs)  # runs of ten to one partition
                assert [run[0] for run in runs[:3]] == [(runs[0][0] + i) % 3 for i in range(3)]
                keyed = {(await client.produce("sticky", b"v", key=b"k"))[0] for _ in range(5)}
                assert len(keyed) == 1  # a key still picks its partition by hash
            one_by_one = ProducerConfig(sticky_bytes=0)
            async with await connect(server.address, producer=one_by_one) as client:
                placed = [(await client.produce("sticky", b"v" * 100))[0] for _ in range(6)]
                assert placed == [(placed[0] + i) % 3 for i in range(6)]
        finally:
            await server.stop(grace_s=1)

    asyncio.run(main())
