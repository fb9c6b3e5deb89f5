"""An async client for the counters service."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from blocks.core.rpc import ChannelClient, mapped_errors
from blocks.counters import counters_pb2, counters_pb2_grpc

__all__ = ["CountersClient"]


def _as_bytes(item: bytes | str) -> bytes:
    return item.encode() if isinstance(item, str) else item


class CountersClient(ChannelClient):
    """``async with CountersClient(address) as client: await client.increment("views")``."""

    def __init__(self, address: str, *, token: str | None = None, timeout_s: float = 10.0) -> None:
        super().__init__(address, token=token, timeout_s=timeout_s)
        self._stub: Any = counters_pb2_grpc.CountersStub(self._channel)  # type: ignore[no-untyped-call]

    async def increment(self, name: str, amount: int = 1) -> int:
        with mapped_errors():
            reply = await self._stub.Increment(
                counters_pb2.IncrementRequest(name=name, amount=amount), timeout=self._timeout_s
            )
        return int(reply.value)

    async def value(self, name: str) -> int:
        with mapped_errors():
            reply = await self._stub.Value(
                counters_pb2.NameRequest(name=name), timeout=self._timeout_s
            )
        return int(reply.value)

    async def add_distinct(self, name: str, items: Iterable[bytes | str]) -> int:
        request = counters_pb2.ItemsRequest(name=name, items=[_as_bytes(i) for i in items])
        with mapped_errors():
            reply = await self._stub.AddDistinct(request, timeout=self._timeout_s)
        return int(reply.count)

    async def count_distinct(self, name: str) -> int:
        with mapped_errors():
            reply = await self._stub.CountDistinct(
                counters_pb2.NameRequest(name=name), timeout=self._timeout_s
            )
        return int(reply.count)

    async def add_frequent(self, name: str, items: Iterable[bytes | str]) -> int:
        request = counters_pb2.ItemsRequest(name=name, items=[_as_bytes(i) for i in items])
        with mapped_errors():
            reply = await self._stub.AddFrequent(request, timeout=self._timeout_s)
        return int(reply.count)

    async def top_k(self, name: str, n: int = 10) -> list[tuple[bytes, int]]:
        with mapped_errors():
            reply = await self._stub.TopK(
                counters_pb2.TopKRequest(name=name, n=n), timeout=self._timeout_s
            )
        return [(item, int(count)) for item, count in zip(reply.items, reply.counts, strict=True)]
