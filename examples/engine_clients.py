"""The ``engines`` backend's Redis blocks, given the async shape of ``examples/ports.py``.

Theory of operation. The Redis adapters (``RedisKeyValueStore``, ``RedisCache``,
``RedisCounters``, ``RedisTokenBucket``, ``RedisSnowflake``) are blocking redis-py clients; the designs are asyncio. Each class here
runs the adapter's calls on a ``BlockingCalls`` pool of the stack's own, never on the event
loop's default executor (which the in-process servers use), and changes nothing else: the
answers and the errors are the adapter's.

kv is the one place where the shapes differ. Redis keeps one value per key, so a read has
one sibling (or none) and its context is the adapter's version (``b""`` for an absent key);
``put`` with a context is ``compare_and_set`` and a raced write is refused with ``Conflict``
instead of being kept as a sibling (the designs' ``put_merging`` then merges and retries).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from blocks.cache.adapters.redis import RedisCache
from blocks.counters.adapters.redis import RedisCounters
from blocks.kv.adapters.redis import RedisKeyValueStore
from blocks.ratelimit.adapters.redis import RedisTokenBucket
from blocks.ratelimit.api import Decision
from blocks.sequencer.adapters.redis import RedisSnowflake
from blocks.sequencer.snowflake import DecodedId, decode
from examples.common import BlockingCalls

__all__ = ["RedisIds", "RedisLimiter", "RedisMemo", "RedisRead", "RedisUsage", "RedisVersions"]


@dataclass(frozen=True, slots=True)
class RedisRead:
    """A ``VersionedRead`` from Redis: at most one sibling, the version as the context."""

    value: bytes | None
    siblings: tuple[bytes, ...]
    context: bytes


class RedisVersions:
    """``VersionedStore`` over ``RedisKeyValueStore`` (compare-and-set, no siblings)."""

    def __init__(self, store: RedisKeyValueStore, calls: BlockingCalls) -> None:
        self.store = store
        self._calls = calls

    async def get(self, key: str) -> RedisRead:
        read = await self._calls.run(lambda: self.store.get_versioned(key))
        siblings = () if read.value is None else (read.value,)
        return RedisRead(read.value, siblings, (read.version or "").encode())

    async def put(self, key: str, value: bytes, context: bytes | None = None) -> object:
        """Without ``context`` a plain write; with one, written only if the key is still at
        that version (absent, for the context of a read that found nothing), else
        ``Conflict``."""
        if context is None:
            await self._calls.run(lambda: self.store.put(key, value))
            return None
        expected = context.decode() or None
        return await self._calls.run(lambda: self.store.compare_and_set(key, value, expected))

    async def close(self) -> None:
        await self._calls.run(self.store.close)


class RedisUsage:
    """``CountersStore`` over ``RedisCounters`` (INCRBY, PFADD/PFCOUNT, Count-Min + top-k)."""

    def __init__(self, counters: RedisCounters, calls: BlockingCalls) -> None:
        self.counters = counters
        self._calls = calls

    async def increment(self, name: str, amount: int = 1) -> int:
        return await self._calls.run(lambda: self.counters.increment(name, amount))

    async def value(self, name: str) -> int:
        return await self._calls.run(lambda: self.counters.value(name))

    async def add_distinct(self, name: str, items: Iterable[bytes | str]) -> int:
        batch = list(items)
        return await self._calls.run(lambda: self.counters.add_distinct(name, batch))

    async def count_distinct(self, name: str) -> int:
        return await self._calls.run(lambda: self.counters.count_distinct(name))

    async def add_frequent(self, name: str, items: Iterable[bytes | str]) -> int:
        batch = list(items)
        return await self._calls.run(lambda: self.counters.add_frequent(name, batch))

    async def top_k(self, name: str, n: int = 10) -> list[tuple[bytes, int]]:
        return await self._calls.run(lambda: self.counters.top_k(name, n))

    async def close(self) -> None:
        await self._calls.run(self.counters.close)


class RedisLimiter:
    """``Limiter`` over ``RedisTokenBucket`` (one Lua script per decision, server time)."""

    def __init__(self, bucket: RedisTokenBucket, calls: BlockingCalls) -> None:
        self.bucket = bucket
        self._calls = calls

    async def acquire(self, key: str, cost: int = 1) -> Decision:
        return await self._calls.run(lambda: self.bucket.acquire(key, cost))

    async def close(self) -> None:
        await self._calls.run(self.bucket.close)


class RedisMemo:
    """``CacheStore`` over ``RedisCache`` (SET with PX, GET, DEL; bytes stored as they are)."""

    def __init__(self, cache: RedisCache, calls: BlockingCalls) -> None:
        self.cache = cache
        self._calls = calls

    async def get(self, key: str) -> bytes | None:
        found = await self._calls.run(lambda: self.cache.get(key))
        return found if isinstance(found, bytes) else None

    async def put(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self._calls.run(lambda: self.cache.put(key, value, ttl))

    async def delete(self, key: str) -> bool:
        return await self._calls.run(lambda: self.cache.delete(key))

    async def close(self) -> None:
        await self._calls.run(self.cache.close)


class RedisIds:
    """``IdSource`` over ``RedisSnowflake`` (a worker id leased from Redis, ids made here).

    The generator is used by one thread at a time, as it requires: ``calls`` must be a pool
    of one thread (``BlockingCalls(1, ...)``)."""

    def __init__(self, generator: RedisSnowflake, calls: BlockingCalls) -> None:
        self.generator = generator
        self._calls = calls

    async def next_id(self) -> int:
        return await self._calls.run(self.generator.next_id)

    async def decode(self, snowflake_id: int) -> DecodedId:
        return decode(snowflake_id)  # the generator's default layout and epoch

    async def close(self) -> None:
        await self._calls.run(self.generator.close)
        await self._calls.close()
