"""``PubSubCalls``: ``create_topic`` and ``fetch`` of the ``PubSub`` interface, spelled once.

Theory of operation
-------------------
The broker (``LocalBroker``, and ``ClusterBroker`` above it) and the network client
(``PubSubClient``) take a topic's settings as one ``TopicConfig``, validated when built, and a
fetch as its five arguments. This class gives them the signatures and defaults of
``blocks.pubsub.api.PubSub`` (whose docstrings state the contract) once; an implementation
supplies ``_create_topic`` and ``_fetch``. A replicated broker's ``_fetch`` also takes the
hops a forwarded fetch has made (``blocks.pubsub.cluster``).
"""

from __future__ import annotations

from blocks.core.closing import AsyncClosing
from blocks.pubsub.api import Record
from blocks.pubsub.topics import TopicConfig

__all__ = ["PubSubCalls"]


class PubSubCalls(AsyncClosing):
    """``create_topic`` and ``fetch`` of ``blocks.pubsub.api.PubSub`` over the hooks below
    (see the module docs)."""

    __slots__ = ()

    # -- what an implementation supplies ---------------------------------------------------

    async def _create_topic(self, config: TopicConfig) -> None:
        """Create the topic ``config`` describes (``create_topic``'s contract)."""
        raise NotImplementedError

    async def _fetch(
        self, topic: str, partition: int, offset: int, max_messages: int, wait_ms: int
    ) -> list[Record]:
        """Records from ``offset`` on (``fetch``'s contract)."""
        raise NotImplementedError

    # -- the PubSub interface --------------------------------------------------------------

    async def create_topic(
        self,
        name: str,
        partitions: int = 1,
        *,
        retention_ms: int | None = None,
        retention_bytes: int | None = None,
        compact: bool = False,
    ) -> None:
        """See ``blocks.pubsub.api.PubSub.create_topic``."""
        await self._create_topic(
            TopicConfig(name, partitions, retention_ms, retention_bytes, compact)
        )

    async def fetch(
        self,
        topic: str,
        partition: int,
        offset: int,
        max_messages: int = 100,
        wait_ms: int = 0,
    ) -> list[Record]:
        """See ``blocks.pubsub.api.PubSub.fetch``."""
        return await self._fetch(topic, partition, offset, max_messages, wait_ms)
