"""``ShardedTextIndex``: BM25 over document-partitioned shards with global statistics.

Theory of operation. A document lives on shard ``xxh3_64(doc_id) % num_shards``. Scoring a
shard with its *own* document frequencies would rank a rare-here-but-common-elsewhere term
too high, so a search runs in two phases, as a distributed engine does with a "DFS" pre-query:

1. gather ``CorpusStats`` for the query terms from every shard and add them up
   (``CorpusStats.combine``): global ``N``, total length and ``df``;
2. every shard scores its own documents with those global statistics and returns its top
   ``k``; the union is ordered by (score desc, doc id asc) and cut to ``k``.

Because each shard evaluates exactly the unsharded formula with the same inputs in the same
order, the merged scores equal the unsharded index's scores bit for bit. The shards here are
local ``BM25Index`` objects; a remote shard needs only ``stats`` and ``search(stats=...)``.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import xxhash

from blocks.core.errors import InvalidArgument
from blocks.search.bm25 import BM25Index, CorpusStats, TextHit, check_doc_id, check_text_k
from blocks.search.tokenize import tokenize

__all__ = ["ShardedTextIndex", "text_shard_of"]


def text_shard_of(doc_id: str, num_shards: int) -> int:
    """Owning shard of a document id; stable across processes."""
    return xxhash.xxh3_64_intdigest(doc_id.encode("utf-8")) % num_shards


class ShardedTextIndex:
    """BM25 search over ``shards``; scores equal an unsharded ``BM25Index`` over the same docs."""

    def __init__(self, shards: Sequence[BM25Index] | int) -> None:
        if isinstance(shards, int):
            if not 1 <= shards <= 1024:
                raise InvalidArgument("num_shards must be in 1..1024")
            shards = [BM25Index() for _ in range(shards)]
        if not shards:
            raise InvalidArgument("need at least one shard")
        first = shards[0]
        if any(s.k1 != first.k1 or s.b != first.b for s in shards):
            raise InvalidArgument("all shards must share k1 and b")
        self._shards = list(shards)

    @property
    def shards(self) -> list[BM25Index]:
        return list(self._shards)

    def __len__(self) -> int:
        return sum(len(s) for s in self._shards)

    def _shard(self, doc_id: str) -> BM25Index:
        return self._shards[text_shard_of(check_doc_id(doc_id), len(self._shards))]

    def add(self, doc_id: str, text: str) -> None:
        self._shard(doc_id).add(doc_id, text)

    def update(self, doc_id: str, text: str) -> None:
        self._shard(doc_id).update(doc_id, text)

    def upsert(self, doc_id: str, text: str) -> None:
        self._shard(doc_id).upsert(doc_id, text)

    def delete(self, doc_id: str) -> bool:
        return self._shard(doc_id).delete(doc_id)

    def global_stats(self, query: str) -> CorpusStats:
        terms = sorted(set(tokenize(query)))
        return CorpusStats.combine(s.stats(terms) for s in self._shards)

    def search(self, query: str, k: int = 10) -> list[TextHit]:
        check_text_k(k)
        stats = self.global_stats(query)
        hits: list[TextHit] = []
        for shard in self._shards:
            hits.extend(shard.search(query, k, stats=stats))
        return heapq.nsmallest(k, hits, key=lambda hit: (-hit.score, hit.doc_id))
