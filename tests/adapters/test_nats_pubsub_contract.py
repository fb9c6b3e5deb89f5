"""The pub-sub contract against ``NatsPubSub`` on a real ``nats-server -js``: every property
the adapter claims. Each example gets its own namespace (streams and commit bucket), removed
at the end of the example; ``restart_subject`` closes the adapter, restarts the nats-server
(same port and file store) and opens a new adapter: every record and commit must be there."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, ClassVar

import pytest
from hypothesis import settings

from blocks.core.errors import Unavailable
from blocks.pubsub.api import PubSub
from blocks.pubsub.contract import SESSION_TIMEOUT_MS, PubSubContract
from blocks.testing.engines import NatsServer

nats_adapter = pytest.importorskip("blocks.pubsub.adapters.nats", reason="nats-py not installed")

RECOVERY_DEADLINE_S = 30.0


class NatsPubSubContract(PubSubContract):
    declared_properties = nats_adapter.PROPERTIES
    server: ClassVar[NatsServer | None] = None

    def __init__(self) -> None:
        super().__init__()
        self.namespace = f"c{uuid.uuid4().hex[:10]}_"

    async def _open(self) -> Any:
        assert self.server is not None
        return await nats_adapter.NatsPubSub.open(
            self.server.url,
            namespace=self.namespace,
            clock=self.clock,
            session_timeout_ms=SESSION_TIMEOUT_MS,
        )

    async def make_subject(self) -> PubSub:
        pubsub: PubSub = await self._open()
        return pubsub

    async def restart_subject(self, pubsub: PubSub) -> PubSub | None:
        await pubsub.close()
        assert self.server is not None
        self.server.restart()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECOVERY_DEADLINE_S
        while True:  # JetStream recovers its streams after the port opens
            try:
                reopened: PubSub = await self._open()
                await reopened.end_offsets("events", 0)
                return reopened
            except Unavailable:
                assert loop.time() < deadline, "JetStream did not come back"
                await asyncio.sleep(0.1)

    async def close_subject(self, subject: PubSub) -> None:
        assert isinstance(subject, nats_adapter.NatsPubSub)
        await delete_namespace(subject, self.namespace)
        await subject.close()


async def delete_namespace(pubsub: Any, namespace: str) -> None:
    """Remove the streams (the commit bucket is one) of ``namespace``."""
    manager = pubsub._js  # the test's own cleanup; not part of the API
    for info in await manager.streams_info():
        name = info.config.name or ""
        if name.startswith(namespace) or name == f"KV_{namespace}commits":
            await manager.delete_stream(name)


@pytest.fixture(autouse=True)
def _nats_server(nats_server: NatsServer) -> None:
    NatsPubSubContract.server = nats_server


TestNatsPubSubContract = NatsPubSubContract.TestCase
TestNatsPubSubContract.settings = settings(
    settings.default, max_examples=6, stateful_step_count=20, deadline=None
)
