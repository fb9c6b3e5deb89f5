"""The rate-limit gRPC service: one server-side limiter and a shared window store.

``Acquire`` asks the server's limiter (any algorithm of this package) and returns its
``Decision``; a refusal is a normal reply (``allowed=false`` with ``retry_after_ms``), not an
error, so clients can decide to wait. ``AddWindow`` exposes a ``MemoryWindowStore`` so that
``DistributedLimiter`` instances in other processes or on other machines can share limits
through this server (``client.RemoteWindowStore``).
"""

from __future__ import annotations

from typing import Any

from blocks.core.errors import InvalidArgument
from blocks.core.server import Server
from blocks.ratelimit import ratelimit_pb2, ratelimit_pb2_grpc
from blocks.ratelimit.api import KEY_BYTES_MAX, RateLimiter
from blocks.ratelimit.bucket import GCRA, TokenBucket
from blocks.ratelimit.distributed import MemoryWindowStore
from blocks.ratelimit.windows import FixedWindow, SlidingWindowCounter, SlidingWindowLog

__all__ = ["ALGORITHMS", "RateLimitService", "build_server", "make_limiter"]

ALGORITHMS = ("token-bucket", "gcra", "fixed-window", "sliding-log", "sliding-counter")
DELTA_MAX = 1 << 40


def make_limiter(algorithm: str, *, rate_per_s: float, burst: int, window_ms: int) -> RateLimiter:
    """Build a limiter by name: buckets use ``rate_per_s``/``burst``, windows ``burst`` as limit."""
    if algorithm == "token-bucket":
        return TokenBucket(rate_per_s, burst)
    if algorithm == "gcra":
        return GCRA(rate_per_s, burst)
    if algorithm == "fixed-window":
        return FixedWindow(burst, window_ms)
    if algorithm == "sliding-log":
        return SlidingWindowLog(burst, window_ms)
    if algorithm == "sliding-counter":
        return SlidingWindowCounter(burst, window_ms)
    raise InvalidArgument(f"unknown algorithm {algorithm!r}; choose from {', '.join(ALGORITHMS)}")


class RateLimitService(ratelimit_pb2_grpc.RateLimitServicer):
    def __init__(self, limiter: RateLimiter, store: MemoryWindowStore | None = None) -> None:
        self.limiter = limiter
        self.store = store or MemoryWindowStore()

    async def Acquire(self, request: Any, context: Any) -> Any:  # gRPC names are CamelCase
        decision = self.limiter.acquire(request.key, request.cost or 1)
        return ratelimit_pb2.DecisionReply(
            allowed=decision.allowed,
            remaining=decision.remaining,
            retry_after_ms=decision.retry_after_ms,
            reset_ms=decision.reset_ms,
        )

    async def AddWindow(self, request: Any, context: Any) -> Any:
        key = request.key
        if not key or len(key.encode()) > KEY_BYTES_MAX or abs(request.delta) > DELTA_MAX:
            raise InvalidArgument("bad key or delta")
        count, previous = self.store.add(key, request.window, request.delta)
        return ratelimit_pb2.AddWindowReply(count=count, previous=previous)


def build_server(
    limiter: RateLimiter, *, host: str = "127.0.0.1", port: int = 0, token: str | None = None
) -> tuple[Server, RateLimitService]:
    """A ``Server`` (not yet started) answering for ``limiter``."""
    service = RateLimitService(limiter)
    server = Server(host=host, port=port, token=token, name="ratelimit")
    server.add_service(
        ratelimit_pb2_grpc.add_RateLimitServicer_to_server,
        service,
        health_name="blocks.ratelimit.RateLimit",
    )
    return server, service
