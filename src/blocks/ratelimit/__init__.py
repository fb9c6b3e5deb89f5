"""Rate limits per key, in one process or shared by many.

``TokenBucket`` and ``GCRA`` (bursts plus a sustained rate), ``FixedWindow``,
``SlidingWindowLog`` and ``SlidingWindowCounter`` (a limit per window), each answering
``acquire(key, cost)`` with a ``Decision``; ``limit``/``rate_limited`` use them from async
code; ``DistributedLimiter`` shares a limit across processes through a ``WindowStore``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from blocks.ratelimit.api import Decision, RateLimiter
from blocks.ratelimit.bucket import GCRA, TokenBucket
from blocks.ratelimit.distributed import (
    DistributedLimiter,
    FileWindowStore,
    MemoryWindowStore,
    WindowStore,
)
from blocks.ratelimit.guard import acquire_or_wait, limit, rate_limited
from blocks.ratelimit.kvstore import KvWindowStore
from blocks.ratelimit.windows import FixedWindow, SlidingWindowCounter, SlidingWindowLog

__all__ = [
    "GCRA",
    "Decision",
    "DistributedLimiter",
    "FileWindowStore",
    "FixedWindow",
    "KvWindowStore",
    "MemoryWindowStore",
    "RateLimiter",
    "SlidingWindowCounter",
    "SlidingWindowLog",
    "TokenBucket",
    "WindowStore",
    "acquire_or_wait",
    "connect",
    "limit",
    "rate_limited",
]


if TYPE_CHECKING:
    from blocks.ratelimit.client import RateLimitClient


def connect(
    address: str = "127.0.0.1:7303", *, token: str | None = None, timeout_s: float = 10.0
) -> RateLimitClient:
    """An async client of the rate-limit node at ``address``; use it with ``async with`` (``HOST:PORT``, the default is ``blocks ratelimit serve``'s)."""
    from blocks.ratelimit.client import RateLimitClient

    return RateLimitClient(address, token=token, timeout_s=timeout_s)
