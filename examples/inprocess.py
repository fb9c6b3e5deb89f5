"""The ``local`` backend's blocks: each block's own in-process implementation, no sockets.

Theory of operation. ``--backend local`` runs every block as the object its server would
wrap, in this process: the counters node, a token bucket, a Snowflake generator, a blob store,
a search node. The classes here only give those objects the async (or, for blobs and search,
the blocking) shape of ``examples/ports.py``; the logic is the block's. Nothing here is
shared between threads except ``LocalObjects``' store, which is thread-safe itself, and
``LocalSearch``'s node, which it guards with a lock of its own.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from blocks.counters.node import CountersNode
from blocks.ratelimit.api import Decision
from blocks.ratelimit.base import KeyedLimiter
from blocks.search.service import SearchNode
from blocks.sequencer.snowflake import DecodedId, Snowflake

__all__ = [
    "BlobObjects",
    "LocalCountersStore",
    "LocalIds",
    "LocalLimiter",
    "LocalObjects",
    "LocalSearch",
]


def _items(items: Iterable[bytes | str]) -> list[bytes]:
    return [item.encode() if isinstance(item, str) else item for item in items]


class LocalCountersStore:
    """``CountersStore`` over one ``CountersNode`` (counters, HyperLogLog, top-k)."""

    def __init__(self, name: str, *, seed: int = 0) -> None:
        self.node = CountersNode(name, [], rng=random.Random(seed))

    async def increment(self, name: str, amount: int = 1) -> int:
        return self.node.apply(["increment", name, amount])

    async def value(self, name: str) -> int:
        return self.node.counters.value(name)

    async def add_distinct(self, name: str, items: Iterable[bytes | str]) -> int:
        return self.node.apply(["distinct", name, _items(items)])

    async def count_distinct(self, name: str) -> int:
        return self.node.sketches.count_distinct(name)

    async def add_frequent(self, name: str, items: Iterable[bytes | str]) -> int:
        return self.node.apply(["frequent", name, _items(items)])

    async def top_k(self, name: str, n: int = 10) -> list[tuple[bytes, int]]:
        return self.node.sketches.top(name, n)


class LocalLimiter:
    """``Limiter`` over a keyed limiter (``TokenBucket``, ``GCRA``) in this process."""

    def __init__(self, limiter: KeyedLimiter[Any]) -> None:
        self.limiter = limiter

    async def acquire(self, key: str, cost: int = 1) -> Decision:
        return self.limiter.acquire(key, cost)


class LocalIds:
    """``IdSource`` over a ``Snowflake`` generator with a fixed worker id."""

    def __init__(self, worker_id: int = 1) -> None:
        self.generator = Snowflake(worker_id)

    async def next_id(self) -> int:
        return self.generator.next_id()

    async def decode(self, snowflake_id: int) -> DecodedId:
        return self.generator.decode(snowflake_id)


class BlobObjects(Protocol):
    """The two calls of ``blocks.blob.api.BlobStore`` the designs make."""

    def put_object(self, bucket: str, key: str, data: bytes) -> object: ...

    def get_object(self, bucket: str, key: str) -> tuple[Any, bytes]: ...


class LocalObjects:
    """``ObjectStore`` over a shared blob store (``LocalBlobStore``, or an adapter such as
    ``S3BlobStore``) that its owner closes: closing this handle closes nothing."""

    def __init__(self, store: BlobObjects) -> None:
        self.store = store

    def put_object(self, bucket: str, key: str, data: bytes) -> object:
        return self.store.put_object(bucket, key, data)

    def get_object(self, bucket: str, key: str) -> bytes:
        return self.store.get_object(bucket, key)[1]

    def close(self) -> None:
        """The store belongs to the stack; a handle has nothing of its own to close."""


class LocalSearch:
    """``TextSearch`` over a ``SearchNode`` in this process, one call at a time."""

    def __init__(self, node: SearchNode) -> None:
        self.node = node
        self._lock = threading.Lock()

    def index_documents(self, documents: Sequence[tuple[str, str]]) -> int:
        with self._lock:
            return self.node.index_documents(list(documents))

    def search_text(self, query: str, k: int = 10) -> list[dict[str, Any]]:
        with self._lock:
            hits = self.node.search_text(query, k, "bm25")
        return [{"id": doc_id, "score": score, "text": text} for doc_id, score, text in hits]

    def suggest(self, prefix: str, k: int = 10) -> list[tuple[str, int]]:
        with self._lock:
            return self.node.typeahead.suggest(prefix, k)
