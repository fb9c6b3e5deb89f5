"""Clients for the rate-limit service: async ``RateLimitClient`` and a blocking store.

``RemoteWindowStore`` is a ``distributed.WindowStore`` whose ``add`` is one blocking gRPC call
to a rate-limit server, so ``DistributedLimiter`` (which is synchronous) can share limits
across machines through it.
"""

from __future__ import annotations

from typing import Any

import grpc

from blocks.core.errors import error_from_status
from blocks.core.rpc import ChannelClient, channel_options, mapped_errors
from blocks.ratelimit import ratelimit_pb2, ratelimit_pb2_grpc
from blocks.ratelimit.api import Decision

__all__ = ["RateLimitClient", "RemoteWindowStore"]


def _decision(reply: Any) -> Decision:
    return Decision(
        allowed=reply.allowed,
        remaining=reply.remaining,
        retry_after_ms=reply.retry_after_ms,
        reset_ms=reply.reset_ms,
    )


class RateLimitClient(ChannelClient):
    """``async with RateLimitClient(address) as client: await client.acquire("user:1")``."""

    def __init__(self, address: str, *, token: str | None = None, timeout_s: float = 10.0) -> None:
        super().__init__(address, token=token, timeout_s=timeout_s)
        self._stub: Any = ratelimit_pb2_grpc.RateLimitStub(self._channel)  # type: ignore[no-untyped-call]

    async def acquire(self, key: str, cost: int = 1) -> Decision:
        with mapped_errors():
            reply = await self._stub.Acquire(
                ratelimit_pb2.AcquireRequest(key=key, cost=cost), timeout=self._timeout_s
            )
        return _decision(reply)


class RemoteWindowStore:
    """A blocking ``WindowStore`` backed by a rate-limit server's ``AddWindow``."""

    def __init__(self, address: str, *, token: str | None = None, timeout_s: float = 5.0) -> None:
        self._channel = grpc.insecure_channel(address, options=channel_options())
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._stub: Any = ratelimit_pb2_grpc.RateLimitStub(self._channel)  # type: ignore[no-untyped-call]
        self._timeout_s = timeout_s
        self.round_trips = 0

    def add(self, key: str, window: int, delta: int) -> tuple[int, int]:
        self.round_trips += 1
        request = ratelimit_pb2.AddWindowRequest(key=key, window=window, delta=delta)
        try:
            reply = self._stub.AddWindow(request, timeout=self._timeout_s, metadata=self._metadata)
        except grpc.RpcError as error:
            raise error_from_status(
                error.code(), error.details() or "", error.trailing_metadata() or ()
            ) from error
        return int(reply.count), int(reply.previous)

    def close(self) -> None:
        self._channel.close()
