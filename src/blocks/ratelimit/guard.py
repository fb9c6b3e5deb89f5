"""Using a limiter from async code: ``limit(...)`` (a context manager) and ``rate_limited``.

``acquire_or_wait`` asks the limiter, and on a refusal sleeps ``retry_after_ms`` and asks again,
for at most ``wait_ms_max`` in total; past that it raises ``Overloaded`` carrying the last
``retry_after_ms`` so a server can pass it on to its client. With ``wait_ms_max=0`` (the
default) it never sleeps: a refusal raises at once. The sleep function is injected so tests
can drive it with a ``ManualClock``.

    async with limit(limiter, f"user:{user_id}"):
        ...                                  # runs only when admitted

    @rate_limited(limiter, key=lambda request: request.tenant, wait_ms_max=200)
    async def handle(request): ...
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, ParamSpec, TypeVar

from blocks.core.errors import InvalidArgument, Overloaded
from blocks.ratelimit.api import Decision, RateLimiter

__all__ = ["WAIT_ROUNDS_MAX", "acquire_or_wait", "limit", "rate_limited"]

WAIT_ROUNDS_MAX = 1000
Sleep = Callable[[float], Awaitable[Any]]
P = ParamSpec("P")
R = TypeVar("R")


async def acquire_or_wait(
    limiter: RateLimiter,
    key: str,
    cost: int = 1,
    *,
    wait_ms_max: int = 0,
    sleep: Sleep = asyncio.sleep,
) -> Decision:
    """An admitted ``Decision``, waiting up to ``wait_ms_max``; else ``Overloaded``."""
    if not isinstance(wait_ms_max, int) or wait_ms_max < 0:
        raise InvalidArgument("wait_ms_max must be a non-negative int")
    waited_ms = 0
    for _ in range(WAIT_ROUNDS_MAX):
        decision = limiter.acquire(key, cost)
        if decision.allowed:
            return decision
        if waited_ms + decision.retry_after_ms > wait_ms_max:
            raise Overloaded(
                f"rate limit for {key!r} exceeded", retry_after_ms=decision.retry_after_ms
            )
        await sleep(decision.retry_after_ms / 1000.0)
        waited_ms += decision.retry_after_ms
    raise Overloaded(f"rate limit for {key!r}: gave up after {WAIT_ROUNDS_MAX} waits")


@asynccontextmanager
async def limit(
    limiter: RateLimiter,
    key: str,
    cost: int = 1,
    *,
    wait_ms_max: int = 0,
    sleep: Sleep = asyncio.sleep,
) -> AsyncIterator[Decision]:
    """Enter only once admitted (see ``acquire_or_wait``); yields the ``Decision``."""
    yield await acquire_or_wait(limiter, key, cost, wait_ms_max=wait_ms_max, sleep=sleep)


def rate_limited(
    limiter: RateLimiter,
    *,
    key: str | Callable[..., str],
    cost: int = 1,
    wait_ms_max: int = 0,
    sleep: Sleep = asyncio.sleep,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Decorate an async function so each call first passes the limiter.

    ``key`` is a fixed key or a function of the call's arguments that returns one.
    """

    def decorate(function: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(function)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            call_key = key(*args, **kwargs) if callable(key) else key
            await acquire_or_wait(limiter, call_key, cost, wait_ms_max=wait_ms_max, sleep=sleep)
            return await function(*args, **kwargs)

        return wrapper

    return decorate
