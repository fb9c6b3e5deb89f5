"""A blocking wrapper: ``SyncQueue`` for scripts and notebooks without an event loop.

One background thread runs an event loop; every method submits the matching coroutine of the
wrapped async queue to it and waits for the result (bounded by ``timeout_s``). Errors are the
same ``BlocksError`` classes the async API raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from blocks.core.loop_thread import BlockingWrapper, LoopThread
from blocks.queue.api import Message, Queue

__all__ = ["LoopThread", "SyncQueue"]  # LoopThread lives in blocks.core.loop_thread


class SyncQueue(BlockingWrapper[Queue]):
    """``q = SyncQueue.connect(["127.0.0.1:7301"]); q.send("jobs", b"x")``."""

    thread_name = "blocks-queue"

    @classmethod
    def connect(cls, addresses: Sequence[str] | str, *, token: str | None = None) -> SyncQueue:
        from blocks.queue.client import connect

        return cls(lambda: connect(addresses, token=token))

    def create_queue(self, name: str, **options: Any) -> None:
        self._runner.call(self._client.create_queue(name, **options))

    def send(self, name: str, body: bytes, **options: Any) -> str:
        return self._runner.call(self._client.send(name, body, **options))

    def receive(self, name: str, **options: Any) -> list[Message]:
        return self._runner.call(self._client.receive(name, **options))

    def ack(self, name: str, receipt: str) -> None:
        self._runner.call(self._client.ack(name, receipt))

    def nack(self, name: str, receipt: str, *, delay_ms: int = 0) -> None:
        self._runner.call(self._client.nack(name, receipt, delay_ms=delay_ms))

    def extend_visibility(self, name: str, receipt: str, visibility_ms: int) -> None:
        self._runner.call(self._client.extend_visibility(name, receipt, visibility_ms))
