"""A blocking wrapper: ``SyncPubSub`` for scripts and notebooks without an event loop.

The wrapped async client runs on a background event loop (``blocks.core.loop_thread``'s
``BlockingWrapper``); each method waits for its coroutine there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from blocks.core.loop_thread import BlockingWrapper
from blocks.pubsub.api import PubSub, Record

__all__ = ["SyncPubSub"]


class SyncPubSub(BlockingWrapper[PubSub]):
    """``ps = SyncPubSub.connect(["127.0.0.1:7201"]); ps.produce("t", b"x")``."""

    thread_name = "blocks-pubsub"

    @classmethod
    def connect(cls, addresses: Sequence[str] | str, *, token: str | None = None) -> SyncPubSub:
        from blocks.pubsub.client import connect

        return cls(lambda: connect(addresses, token=token))

    def create_topic(self, name: str, partitions: int = 1, **options: Any) -> None:
        self._runner.call(self._client.create_topic(name, partitions, **options))

    def produce(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> tuple[int, int]:
        return self._runner.call(self._client.produce(topic, value, key, partition))

    def fetch(
        self, topic: str, partition: int, offset: int, max_messages: int = 100, wait_ms: int = 0
    ) -> list[Record]:
        return self._runner.call(
            self._client.fetch(topic, partition, offset, max_messages, wait_ms)
        )
