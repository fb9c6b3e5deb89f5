"""The queue contract through gRPC, and the service's error mapping."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import settings

from blocks.core.errors import InvalidArgument, NotFound, Unauthenticated
from blocks.core.server import Server
from blocks.queue.api import Queue
from blocks.queue.client import QueueClient, connect
from blocks.queue.contract import QueueContract
from blocks.queue.service import build_server


class _ServedQueue:
    """A client that also stops its in-process server on close."""

    def __init__(self, client: QueueClient, server: Server) -> None:
        self._client = client
        self._server = server

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def close(self) -> None:
        await self._client.close()
        await self._server.stop(grace_s=1)


class GrpcQueueContract(QueueContract):
    async def make_subject(self) -> Queue:
        server, _ = build_server(None, clock=self.clock)
        await server.start()
        client = await connect([server.address])
        return _ServedQueue(client, server)  # type: ignore[return-value]


TestGrpcQueueContract = GrpcQueueContract.TestCase
TestGrpcQueueContract.settings = settings(settings.default, max_examples=8, stateful_step_count=30)


def test_service_errors_and_auth(tmp_path: Any) -> None:
    async def main() -> None:
        server, _ = build_server(tmp_path / "q", token="sesame")
        await server.start()
        try:
            async with await connect(server.address, token="sesame") as client:
                await client.create_queue("jobs", max_receives=2)
                with pytest.raises(NotFound):
                    await client.send("missing", b"x")
                with pytest.raises(InvalidArgument):
                    await client.send("jobs", b"x" * (2 << 20))
                with pytest.raises(InvalidArgument):
                    await client.ack("jobs", "not-a-receipt")
                message_id = await client.send("jobs", b"hello", group="g")
                [message] = await client.receive("jobs", max_messages=5, wait_ms=100)
                assert (message.id, message.body, message.group) == (message_id, b"hello", "g")
                await client.ack("jobs", message.receipt)
                assert await client.receive("jobs", wait_ms=10) == []
            async with await connect(server.address, token="wrong") as intruder:
                with pytest.raises(Unauthenticated):
                    await intruder.send("jobs", b"x")
        finally:
            await server.stop(grace_s=1)

    asyncio.run(main())


def test_sync_wrappers_against_servers() -> None:
    from blocks.pubsub.service import build_server as build_pubsub
    from blocks.pubsub.sync import SyncPubSub
    from blocks.queue.sync import LoopThread, SyncQueue

    servers = LoopThread("servers")
    queue_server, _ = build_server(None)
    pubsub_server, _ = build_pubsub(None)
    servers.call(queue_server.start())
    servers.call(pubsub_server.start())
    try:
        q = SyncQueue.connect(queue_server.address)
        q.create_queue("jobs")
        q.send("jobs", b"one")
        [message] = q.receive("jobs", wait_ms=100)
        q.ack("jobs", message.receipt)
        q.close()
        ps = SyncPubSub.connect([pubsub_server.address])
        ps.create_topic("t", 2)
        partition, offset = ps.produce("t", b"v", key=b"k")
        assert [r.value for r in ps.fetch("t", partition, offset)] == [b"v"]
        ps.close()
    finally:
        servers.call(queue_server.stop(grace_s=1))
        servers.call(pubsub_server.stop(grace_s=1))
        servers.stop()
