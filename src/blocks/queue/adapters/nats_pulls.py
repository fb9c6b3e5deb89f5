"""A bounded pool of pull subscriptions on one durable JetStream consumer.

Theory of operation
-------------------
A nats-py pull subscription has one inbox, and a ``fetch`` on it waits for the replies to
its own pull request: two receives that share it wait on each other. The pool hands each
concurrent receive a subscription of its own (all on the same durable consumer, so the
server still delivers each message to one of them): an idle one when there is one, a new
one while fewer than ``size_max`` exist, otherwise the receive waits for one to be given
back. Subscriptions are made on demand and kept until ``close``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from nats.js.client import JetStreamContext

__all__ = ["PULLS_PER_QUEUE_MAX", "PullPool"]

PULLS_PER_QUEUE_MAX = 32
"""Most pull subscriptions (so concurrent fetches) one adapter keeps per queue; more
concurrent receives wait for a subscription to come free."""

Subscription = JetStreamContext.PullSubscription


class PullPool:
    """Pull subscriptions made by ``subscribe`` (one round trip each), at most ``size_max``."""

    def __init__(
        self,
        subscribe: Callable[[], Awaitable[Subscription]],
        size_max: int = PULLS_PER_QUEUE_MAX,
    ) -> None:
        if size_max < 1:
            raise ValueError("size_max must be at least 1")
        self._subscribe = subscribe
        self._size_max = size_max
        self._made: list[Subscription] = []
        self._making = 0  # subscriptions being made (counted against size_max)
        self._idle: asyncio.Queue[Subscription] = asyncio.Queue()

    @property
    def size(self) -> int:
        """Subscriptions made so far."""
        return len(self._made)

    @asynccontextmanager
    async def borrow(self) -> AsyncIterator[Subscription]:
        """A subscription no other borrower holds until this one leaves the block."""
        subscription = await self._take()
        try:
            yield subscription
        finally:
            # given back even after ``close``: a borrower still waiting gets it and its
            # fetch fails (the subscription is gone) rather than waiting for ever
            self._idle.put_nowait(subscription)

    async def _take(self) -> Subscription:
        if not self._idle.empty():
            return self._idle.get_nowait()
        if len(self._made) + self._making < self._size_max:
            self._making += 1
            try:
                subscription = await self._subscribe()
            finally:
                self._making -= 1
            self._made.append(subscription)
            return subscription
        return await self._idle.get()

    async def close(self, unsubscribe: bool) -> None:
        """Forget every subscription; ``unsubscribe`` them too (while connected)."""
        made, self._made = self._made, []
        if unsubscribe:
            for subscription in made:
                await subscription.unsubscribe()
