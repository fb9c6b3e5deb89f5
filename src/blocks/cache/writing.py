"""Writing through a cache to a backing store: write-through and write-behind.

Theory of operation. The backing store is anything with ``get(key)``, ``put(key, value)`` and
``delete(key)``, sync or async (a ``blocks.kv`` store fits as is; async methods are awaited).

* ``WriteThrough`` writes the store first and the cache second. If the store write fails, the
  cache entry for the key is dropped (never left stale) and the error reaches the caller, so
  a value is cached only once the store has it.
* ``WriteBehind`` writes the cache now and the store later. Dirty keys wait in an ordered
  map, so repeated writes to one key coalesce into a single store write; ``flush`` writes up
  to ``batch_max`` of them in order and, if the store fails, puts back every write it did not
  complete (unless a newer write to the key arrived meanwhile) and re-raises. The map holds at
  most ``pending_max`` keys: past that, ``put`` raises ``Overloaded`` rather than grow
  without bound. Reads look at the cache, then the pending writes (an evicted dirty value is
  still the latest), then the store. ``run`` is the thin async driver that flushes on a
  timer; ``close`` flushes everything.

Write-behind trades durability for latency: pending writes are lost if the process dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any, Protocol

from blocks.cache.api import Cache
from blocks.core.errors import InvalidArgument, Overloaded

__all__ = ["BackingStore", "WriteBehind", "WriteThrough"]

_NO_ENTRY: Any = object()
"""Private miss marker: ``None`` may be a cached value."""

_DELETED: Any = object()


class BackingStore(Protocol):
    """The store behind the cache. Methods may be plain or ``async``."""

    def get(self, key: Any) -> Any:
        """The stored value, or ``None`` when absent."""
        ...

    def put(self, key: Any, value: Any) -> Any: ...

    def delete(self, key: Any) -> Any: ...


async def _call(method: Any, *args: Any) -> Any:
    result = method(*args)
    if inspect.isawaitable(result):
        return await result
    return result


class WriteThrough:
    """Store first, then cache; reads fill the cache from the store."""

    def __init__(self, cache: Cache[Any, Any], store: BackingStore, *, ttl: float | None = None):
        self._cache, self._store, self._ttl = cache, store, ttl

    async def get(self, key: Hashable) -> Any:
        """Cached value, else the store's (cached on the way), else ``None``."""
        value = self._cache.get(key, _NO_ENTRY)
        if value is not _NO_ENTRY:
            return value
        value = await _call(self._store.get, key)
        if value is not None:
            self._cache.put(key, value, ttl=self._ttl)
        return value

    async def put(self, key: Hashable, value: Any) -> None:
        try:
            await _call(self._store.put, key, value)
        except BaseException:
            self._cache.delete(key)
            raise
        self._cache.put(key, value, ttl=self._ttl)

    async def delete(self, key: Hashable) -> None:
        self._cache.delete(key)
        await _call(self._store.delete, key)


class WriteBehind:
    """Cache now, store later, coalescing writes per key; see the module docstring."""

    def __init__(
        self,
        cache: Cache[Any, Any],
        store: BackingStore,
        *,
        pending_max: int = 10_000,
        batch_max: int = 256,
        ttl: float | None = None,
    ) -> None:
        if pending_max < 1 or batch_max < 1:
            raise InvalidArgument("pending_max and batch_max must be >= 1")
        self._cache, self._store, self._ttl = cache, store, ttl
        self._pending: OrderedDict[Hashable, Any] = OrderedDict()
        self._pending_max = pending_max
        self._batch_max = batch_max
        self._flush_lock = asyncio.Lock()
        self.store_writes = 0

    @property
    def pending(self) -> int:
        """Keys written to the cache but not yet to the store."""
        return len(self._pending)

    def put(self, key: Hashable, value: Any) -> None:
        """Write to the cache now and queue the store write (``Overloaded`` when full)."""
        self._admit(key)
        self._cache.put(key, value, ttl=self._ttl)
        self._pending[key] = value
        self._pending.move_to_end(key)

    def delete(self, key: Hashable) -> None:
        """Drop from the cache now and queue the store delete."""
        self._admit(key)
        self._cache.delete(key)
        self._pending[key] = _DELETED
        self._pending.move_to_end(key)

    def _admit(self, key: Hashable) -> None:
        if key not in self._pending and len(self._pending) >= self._pending_max:
            raise Overloaded(f"{len(self._pending)} writes pending", retry_after_ms=50)

    async def get(self, key: Hashable) -> Any:
        value = self._cache.get(key, _NO_ENTRY)
        if value is not _NO_ENTRY:
            return value
        if key in self._pending:
            pending = self._pending[key]
            return None if pending is _DELETED else pending
        value = await _call(self._store.get, key)
        if value is not None:
            self._cache.put(key, value, ttl=self._ttl)
        return value

    async def flush(self) -> int:
        """Write up to ``batch_max`` pending keys, oldest first; return how many were written."""
        async with self._flush_lock:
            batch: list[tuple[Hashable, Any]] = []
            while self._pending and len(batch) < self._batch_max:
                batch.append(self._pending.popitem(last=False))
            for done, (key, value) in enumerate(batch):
                try:
                    if value is _DELETED:
                        await _call(self._store.delete, key)
                    else:
                        await _call(self._store.put, key, value)
                except BaseException:
                    self._requeue(batch[done:])
                    raise
                self.store_writes += 1
            return len(batch)

    def _requeue(self, unwritten: list[tuple[Hashable, Any]]) -> None:
        for key, value in reversed(unwritten):
            if key not in self._pending:  # a newer write wins over the failed one
                self._pending[key] = value
                self._pending.move_to_end(key, last=False)

    async def close(self) -> None:
        """Flush every pending write."""
        while self._pending:
            await self.flush()

    async def run(self, interval_s: float, stop: asyncio.Event) -> None:
        """Flush every ``interval_s`` until ``stop`` is set, then flush the rest."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
            while self._pending:
                if await self.flush() < self._batch_max:
                    break
        await self.close()
