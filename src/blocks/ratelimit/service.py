"""The rate-limit gRPC service: one server-side limiter and a shared window store.

``Acquire`` asks the server's limiter (any algorithm of this package) and returns its
``Decision``; a refusal is a normal reply (``allowed=false`` with ``retry_after_ms``), not an
error, so clients can decide to wait. ``AddWindow`` exposes a ``MemoryWindowStore`` so that
``DistributedLimiter`` instances in other processes or on other machines can share limits
through this server (``client.RemoteWindowStore``).

With a data directory (``durable.RateLimitStore``) both survive a restart, kill -9 included:
an admission and a window add are logged and durable before the reply, the limiter's clock
continues across the restart (``durable.ContinuedClock``), and the state is snapshotted.
"""

from __future__ import annotations

import asyncio
from typing import Any

from blocks.core.clock import Clock
from blocks.core.errors import InvalidArgument
from blocks.core.log import FsyncPolicy
from blocks.core.server import Server
from blocks.ratelimit import ratelimit_pb2, ratelimit_pb2_grpc
from blocks.ratelimit.api import KEY_BYTES_MAX, RateLimiter
from blocks.ratelimit.base import KeyedLimiter
from blocks.ratelimit.bucket import GCRA, TokenBucket
from blocks.ratelimit.distributed import MemoryWindowStore
from blocks.ratelimit.durable import ContinuedClock, RateLimitStore
from blocks.ratelimit.windows import FixedWindow, SlidingWindowCounter, SlidingWindowLog

__all__ = ["ALGORITHMS", "RateLimitService", "build_server", "make_limiter"]

ALGORITHMS = ("token-bucket", "gcra", "fixed-window", "sliding-log", "sliding-counter")
DELTA_MAX = 1 << 40


def make_limiter(
    algorithm: str,
    *,
    rate_per_s: float,
    burst: int,
    window_ms: int,
    clock: Clock | None = None,
) -> KeyedLimiter[Any]:
    """Build a limiter by name: buckets use ``rate_per_s``/``burst``, windows ``burst`` as limit."""
    if algorithm == "token-bucket":
        return TokenBucket(rate_per_s, burst, clock=clock)
    if algorithm == "gcra":
        return GCRA(rate_per_s, burst, clock=clock)
    if algorithm == "fixed-window":
        return FixedWindow(burst, window_ms, clock=clock)
    if algorithm == "sliding-log":
        return SlidingWindowLog(burst, window_ms, clock=clock)
    if algorithm == "sliding-counter":
        return SlidingWindowCounter(burst, window_ms, clock=clock)
    raise InvalidArgument(f"unknown algorithm {algorithm!r}; choose from {', '.join(ALGORITHMS)}")


class RateLimitService(ratelimit_pb2_grpc.RateLimitServicer):
    def __init__(
        self,
        limiter: RateLimiter,
        store: MemoryWindowStore | None = None,
        durable: RateLimitStore | None = None,
        clock: ContinuedClock | None = None,
    ) -> None:
        if (durable is None) != (clock is None):
            raise InvalidArgument("a durable rate-limit service needs its ContinuedClock")
        self.limiter = limiter
        self.store = store or MemoryWindowStore()
        self.durable = durable
        self._clock = clock

    async def start(self) -> None:
        if self.durable is not None:
            await asyncio.to_thread(self.durable.open)

    async def stop(self) -> None:
        if self.durable is not None:
            self.durable.close()

    async def Acquire(self, request: Any, context: Any) -> Any:  # gRPC names are CamelCase
        cost = request.cost or 1
        if self.durable is None or self._clock is None:
            decision = self.limiter.acquire(request.key, cost)
        else:
            with self._clock.held() as decided_at_s:  # the time the log records is the one used
                decision = self.limiter.acquire(request.key, cost)
            if decision.allowed:
                await self.durable.admitted(request.key, cost, decided_at_s)
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
        if self.durable is not None:
            await self.durable.window_added(key, request.window, request.delta)
        return ratelimit_pb2.AddWindowReply(count=count, previous=previous)


def build_server(
    limiter: RateLimiter,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    data_dir: str | None = None,
    clock: ContinuedClock | None = None,
    fsync: FsyncPolicy = "batch",
) -> tuple[Server, RateLimitService]:
    """A ``Server`` (not yet started) answering for ``limiter``. With ``data_dir`` its state
    survives restarts; ``limiter`` must then be a ``KeyedLimiter`` reading ``clock`` (a
    ``ContinuedClock``, see ``make_limiter(..., clock=)``)."""
    durable = None
    windows = MemoryWindowStore()
    if data_dir is not None:
        if clock is None or not isinstance(limiter, KeyedLimiter) or limiter.clock is not clock:
            raise InvalidArgument("a durable limiter must be a KeyedLimiter on the given clock")
        durable = RateLimitStore(data_dir, limiter, windows, clock, fsync=fsync)
    service = RateLimitService(limiter, windows, durable, clock if durable else None)
    server = Server(host=host, port=port, token=token, name="ratelimit")
    server.add_component(service.start, service.stop, name="ratelimit-state")
    server.add_service(
        ratelimit_pb2_grpc.add_RateLimitServicer_to_server,
        service,
        health_name="blocks.ratelimit.RateLimit",
    )
    return server, service
