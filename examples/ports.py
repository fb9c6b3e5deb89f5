"""What the designs need from each block, as narrow protocols every backend fills.

Theory of operation. A design talks to its blocks only through these protocols (and the
blocks' own ``Queue`` and ``PubSub`` protocols), so ``examples/backends.py`` can hand it the
in-process implementation, blocks' own servers, or an adapter on an engine, and the design's
code stays the same. Each protocol lists only the calls the designs make; its docstring says
what a design may rely on whatever the backend.

The one difference a design must handle itself is in ``VersionedStore``: blocks' kv keeps
writes that did not see each other as *siblings* (a read returns them all), while a store
with compare-and-set (Redis) refuses a write whose context is stale with ``Conflict``. A
design that merges siblings on read and, on ``Conflict``, re-reads and merges before writing
again converges to the same record on both (``merge_write`` in ``examples/common.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from blocks.ratelimit.api import Decision

__all__ = [
    "CacheStore",
    "CountersStore",
    "IdFields",
    "IdSource",
    "Limiter",
    "ObjectStore",
    "TextSearch",
    "VersionedRead",
    "VersionedStore",
]


class VersionedRead(Protocol):
    """One read: ``value`` None when absent; ``siblings`` every concurrent value (one on a
    store without siblings); ``context`` to write back with."""

    @property
    def value(self) -> bytes | None: ...

    @property
    def siblings(self) -> Sequence[bytes]: ...

    @property
    def context(self) -> bytes: ...


class VersionedStore(Protocol):
    """Versioned records (kv). ``put`` with the ``context`` of a read supersedes what that
    read saw; a write that raced it is kept as a sibling (blocks' kv) or refused with
    ``Conflict`` (a compare-and-set store)."""

    async def get(self, key: str) -> VersionedRead: ...

    async def put(self, key: str, value: bytes, context: bytes | None = None) -> object: ...


class CacheStore(Protocol):
    """A cache of bytes: a miss is None; an entry may vanish any time (eviction, TTL)."""

    async def get(self, key: str) -> Any: ...

    async def put(self, key: str, value: bytes, ttl: float | None = None) -> None: ...

    async def delete(self, key: str) -> bool: ...


class CountersStore(Protocol):
    """Exact counters, distinct counts (HyperLogLog) and heavy hitters (top-k)."""

    async def increment(self, name: str, amount: int = 1) -> int: ...

    async def value(self, name: str) -> int: ...

    async def add_distinct(self, name: str, items: Iterable[bytes | str]) -> int: ...

    async def count_distinct(self, name: str) -> int: ...

    async def add_frequent(self, name: str, items: Iterable[bytes | str]) -> int: ...

    async def top_k(self, name: str, n: int = 10) -> list[tuple[bytes, int]]: ...


class Limiter(Protocol):
    """One rate limit, a bucket per key; a refusal carries an honest ``retry_after_ms``."""

    async def acquire(self, key: str, cost: int = 1) -> Decision: ...


class IdFields(Protocol):
    @property
    def unix_ms(self) -> int: ...

    @property
    def worker_id(self) -> int: ...

    @property
    def sequence(self) -> int: ...


class IdSource(Protocol):
    """Unique, time-ordered 64-bit ids (Snowflake) and what one is made of."""

    async def next_id(self) -> int: ...

    async def decode(self, snowflake_id: int) -> IdFields: ...


class ObjectStore(Protocol):
    """Whole objects in buckets, blocking calls (run them on a ``BlockingCalls`` pool); one
    instance is used by one thread at a time and closed by whoever opened it."""

    def put_object(self, bucket: str, key: str, data: bytes) -> object: ...

    def get_object(self, bucket: str, key: str) -> bytes: ...

    def close(self) -> None: ...


class TextSearch(Protocol):
    """BM25 search over titles and typeahead learned from queries, blocking calls."""

    def index_documents(self, documents: Sequence[tuple[str, str]]) -> int: ...

    def search_text(self, query: str, k: int = 10) -> list[dict[str, Any]]: ...

    def suggest(self, prefix: str, k: int = 10) -> list[tuple[str, int]]: ...
