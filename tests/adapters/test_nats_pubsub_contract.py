"""The pub-sub contract against ``NatsPubSub`` on a real ``nats-server -js``: every property
the adapter claims. Each example gets its own namespace (streams and commit bucket), removed
at the end of the example; ``restart_subject`` reopens the adapter on the same server."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

import pytest
from hypothesis import settings

from blocks.pubsub.api import PubSub
from blocks.pubsub.contract import SESSION_TIMEOUT_MS, PubSubContract
from blocks.testing.engines import NatsServer

nats_adapter = pytest.importorskip("blocks.pubsub.adapters.nats", reason="nats-py not installed")


class NatsPubSubContract(PubSubContract):
    declared_properties = nats_adapter.PROPERTIES
    url: ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__()
        self.namespace = f"c{uuid.uuid4().hex[:10]}_"

    async def _open(self) -> Any:
        return await nats_adapter.NatsPubSub.open(
            self.url,
            namespace=self.namespace,
            clock=self.clock,
            session_timeout_ms=SESSION_TIMEOUT_MS,
        )

    async def make_subject(self) -> PubSub:
        pubsub: PubSub = await self._open()
        return pubsub

    async def restart_subject(self, pubsub: PubSub) -> PubSub | None:
        await pubsub.close()
        reopened: PubSub = await self._open()
        return reopened

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
def _nats_url(nats_server: NatsServer) -> None:
    NatsPubSubContract.url = nats_server.url


TestNatsPubSubContract = NatsPubSubContract.TestCase
TestNatsPubSubContract.settings = settings(
    settings.default, max_examples=6, stateful_step_count=20, deadline=None
)
