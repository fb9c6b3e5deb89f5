"""``connect``: the async client of a queue server, implementing ``blocks.queue.api.Queue``.

One gRPC channel per client; calls may run concurrently on it. Errors arrive as the
``BlocksError`` class the server raised. A long poll (``wait_ms``) gets a call deadline of
``wait_ms`` plus the client's ``timeout_s``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from blocks.core.errors import InvalidArgument
from blocks.core.rpc import connect_channel, mapped_errors
from blocks.queue import queue_pb2, queue_pb2_grpc
from blocks.queue.api import Message

__all__ = ["QueueClient", "connect"]


class QueueClient:
    """A ``Queue`` served over gRPC; build it with ``connect``."""

    def __init__(self, address: str, *, token: str | None = None, timeout_s: float = 10.0) -> None:
        self._channel = connect_channel(address, token=token)
        self._stub: Any = queue_pb2_grpc.QueueStub(self._channel)  # type: ignore[no-untyped-call]
        self._timeout_s = timeout_s

    async def _call(self, method: str, request: Any, extra_s: float = 0.0) -> Any:
        with mapped_errors():
            return await getattr(self._stub, method)(request, timeout=self._timeout_s + extra_s)

    async def create_queue(
        self,
        name: str,
        *,
        visibility_ms: int = 30_000,
        max_receives: int = 0,
        dead_letter: str | None = None,
        fifo: bool = False,
        dedup_window_ms: int = 300_000,
    ) -> None:
        if visibility_ms <= 0 or dedup_window_ms <= 0:
            raise InvalidArgument("visibility_ms and dedup_window_ms must be positive")
        await self._call(
            "CreateQueue",
            queue_pb2.CreateQueueRequest(
                name=name,
                visibility_ms=visibility_ms,
                max_receives=max_receives,
                dead_letter=dead_letter,
                fifo=fifo,
                dedup_window_ms=dedup_window_ms,
            ),
        )

    async def delete_queue(self, name: str) -> None:
        await self._call("DeleteQueue", queue_pb2.NameRequest(name=name))

    async def send(
        self,
        name: str,
        body: bytes,
        *,
        delay_ms: int = 0,
        group: str | None = None,
        dedup_id: str | None = None,
        priority: int = 0,
    ) -> str:
        if not 0 <= priority <= 255 or delay_ms < 0:
            raise InvalidArgument("priority must be within 0..255 and delay_ms >= 0")
        reply = await self._call(
            "Send",
            queue_pb2.SendRequest(
                name=name,
                body=body,
                delay_ms=delay_ms,
                group=group,
                dedup_id=dedup_id,
                priority=priority,
            ),
        )
        return str(reply.id)

    async def receive(
        self,
        name: str,
        *,
        max_messages: int = 1,
        wait_ms: int = 0,
        visibility_ms: int | None = None,
    ) -> list[Message]:
        if max_messages < 1 or wait_ms < 0 or (visibility_ms is not None and visibility_ms < 0):
            raise InvalidArgument("max_messages must be >= 1, wait_ms and visibility_ms >= 0")
        request = queue_pb2.ReceiveRequest(
            name=name, max_messages=max_messages, wait_ms=wait_ms, visibility_ms=visibility_ms
        )
        reply = await self._call("Receive", request, extra_s=wait_ms / 1000.0)
        return [
            Message(
                id=m.id,
                receipt=m.receipt,
                body=m.body,
                receive_count=m.receive_count,
                group=m.group if m.HasField("group") else None,
                priority=m.priority,
                sent_ms=m.sent_ms,
            )
            for m in reply.messages
        ]

    async def ack(self, name: str, receipt: str) -> None:
        await self._call("Ack", queue_pb2.ReceiptRequest(name=name, receipt=receipt))

    async def nack(self, name: str, receipt: str, *, delay_ms: int = 0) -> None:
        if delay_ms < 0:
            raise InvalidArgument("delay_ms must be >= 0")
        request = queue_pb2.NackRequest(name=name, receipt=receipt, delay_ms=delay_ms)
        await self._call("Nack", request)

    async def extend_visibility(self, name: str, receipt: str, visibility_ms: int) -> None:
        if visibility_ms < 0:
            raise InvalidArgument("visibility_ms must be >= 0")
        request = queue_pb2.ExtendRequest(name=name, receipt=receipt, visibility_ms=visibility_ms)
        await self._call("ExtendVisibility", request)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> QueueClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def connect(
    addresses: Sequence[str] | str, *, token: str | None = None, timeout_s: float = 10.0
) -> QueueClient:
    """A client for the queue server at the first of ``addresses`` (``host:port``).

    A queue server is a single node; further addresses are accepted for symmetry with
    ``blocks.pubsub.connect`` and ignored.
    """
    if isinstance(addresses, str):
        addresses = [addresses]
    if not addresses:
        raise InvalidArgument("connect needs at least one address")
    return QueueClient(addresses[0], token=token, timeout_s=timeout_s)
