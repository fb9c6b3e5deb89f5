"""An async client for one cache node (``blocks cache serve``).

Values cross the wire as bytes; ``CacheClient`` leaves encoding to its caller (the cluster
client packs values with msgpack). Every call has a deadline (``timeout_s``); failures arrive
as the library's own errors (``Unavailable`` when the node is down, ``Timeout`` past the
deadline, ``InvalidArgument`` for bad keys or values).
"""

from __future__ import annotations

from typing import Any

from blocks.cache import cache_pb2, cache_pb2_grpc
from blocks.cache.api import CacheStats
from blocks.cache.gossip import from_proto
from blocks.cache.membership import Member
from blocks.core.rpc import ChannelClient, mapped_errors

__all__ = ["CacheClient"]


class CacheClient(ChannelClient):
    """``async with CacheClient("127.0.0.1:7305") as node: await node.get("k")``."""

    def __init__(self, address: str, *, token: str | None = None, timeout_s: float = 1.0) -> None:
        super().__init__(address, token=token, timeout_s=timeout_s)
        self.address = address
        self._stub: Any = cache_pb2_grpc.CacheStub(self._channel)  # type: ignore[no-untyped-call]

    async def get(self, key: str, *, view_id: int = 0) -> bytes | None:
        """The value, or ``None`` on a miss. ``view_id``: the membership view the caller
        placed the key under (a node in another view raises ``StaleView``); 0 skips it."""
        request = cache_pb2.KeyRequest(key=key, view_id=view_id)
        with mapped_errors():
            reply = await self._stub.Get(request, timeout=self._timeout_s)
        return bytes(reply.value) if reply.found else None

    async def put(
        self,
        key: str,
        value: bytes,
        ttl: float | None = None,
        weight: int = 1,
        *,
        view_id: int = 0,
    ) -> None:
        request = cache_pb2.PutRequest(
            key=key, value=value, ttl_s=ttl or 0.0, weight=weight, view_id=view_id
        )
        with mapped_errors():
            await self._stub.Put(request, timeout=self._timeout_s)

    async def delete(self, key: str, *, view_id: int = 0) -> bool:
        request = cache_pb2.KeyRequest(key=key, view_id=view_id)
        with mapped_errors():
            reply = await self._stub.Delete(request, timeout=self._timeout_s)
        return bool(reply.deleted)

    async def members(self) -> tuple[list[Member], int]:
        """The node's membership table and its view id (a cluster node only)."""
        with mapped_errors():
            reply = await self._stub.Members(cache_pb2.MembersRequest(), timeout=self._timeout_s)
        return from_proto(reply), int(reply.view_id)

    async def stats(self) -> CacheStats:
        with mapped_errors():
            reply = await self._stub.Stats(cache_pb2.StatsRequest(), timeout=self._timeout_s)
        return CacheStats(
            hits=reply.hits,
            misses=reply.misses,
            evictions=reply.evictions,
            expirations=reply.expirations,
            size=reply.size,
            weight=reply.weight,
            capacity=reply.capacity,
        )
