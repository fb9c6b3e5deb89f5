"""``CoordinatorNode``: a search node whose vectors *and documents* live on remote shards.

Theory of operation. The coordinator's ``SearchNode`` keeps nothing but a typeahead. Its
vector index is a ``Coordinator``; its documents go where the same ``ShardRing`` sends their
ids (the ring key is the id's UTF-8 bytes), written to every replica of the owning shard.
Document writes are upserts and deletes, both idempotent, so a write that failed part-way
(some replicas took it) is made whole by retrying it.

Text search scatters with the coordinator's ``scatter`` (hedges, fail-over, deadline):

* ``bm25`` runs in two phases, as ``ShardedTextIndex`` does in one process: ``TextStats``
  from every shard, summed into corpus-wide ``N``, total length and document frequencies;
  then ``SearchText`` with those statistics on every shard, whose top ``k`` lists are merged
  by (score descending, id). Every shard evaluates the unsharded formula on the same inputs,
  so the scores equal one ``BM25Index`` over all documents.
* ``semantic``: each shard ranks its own documents by cosine similarity (the shards embed,
  ``serve --embed``); similarities need no global statistics, so the merge is exact.
* ``hybrid``: reciprocal-rank fusion of the global BM25 and semantic rankings, ``4k`` deep.

A text search with a shard missing raises ``Timeout`` / ``Unavailable`` naming it, unless
the caller sets ``allow_partial``: then it is answered over the shards that answered every
phase, exactly (a shard lost in BM25's second phase is dropped from the statistics and the
phase asked again), flagged partial with the missing shards' positions and names. Sub-queries are marked ``internal`` so the shards do
not count them; the coordinator counts the query in its own typeahead. Given a data
directory (``serve --remote-shards ... --data-dir``) it keeps those counts, its only state, in
a ``SearchJournal`` there as a shard does (each query logged without an fsync of its own,
snapshots of ``typeahead.json``), so a restart keeps them; it keeps no vectors or documents.
"""

from __future__ import annotations

import heapq
import json
import os
from typing import Any

from blocks.core.errors import BlocksError, InvalidArgument, Timeout, Unavailable
from blocks.search import search_pb2
from blocks.search.api import K_MAX
from blocks.search.bm25 import CorpusStats, check_doc_id, check_text_k
from blocks.search.coordinator_index import Coordinator
from blocks.search.durable import CHECKPOINT_RECORDS_DEFAULT
from blocks.search.hybrid import HYBRID_DEPTH_FACTOR, reciprocal_rank_fusion
from blocks.search.metadata import Value
from blocks.search.node import DOCUMENTS_PER_CALL_MAX, SearchNode
from blocks.search.tokenize import tokenize
from blocks.search.vectors import atomic_write

__all__ = ["CoordinatorNode"]

Hit = tuple[str, float, str]


class CoordinatorNode(SearchNode):
    """A ``SearchNode`` over a ``Coordinator``; see the module docstring."""

    filters_on_shards = True  # a search's ``where`` goes to every shard

    def __init__(
        self,
        coordinator: Coordinator,
        *,
        data_dir: str | None = None,
        checkpoint_records: int = CHECKPOINT_RECORDS_DEFAULT,
    ) -> None:
        super().__init__(
            coordinator,
            kind="coordinator",
            data_dir=data_dir,
            checkpoint_records=checkpoint_records,
        )
        self.coordinator = coordinator
        self.rows = None  # the shards keep the vectors

    def _all_shards(self, method: str, request: Any) -> list[Any]:
        budget_ms = self.coordinator.deadline_ms
        replies, missing, timed_out = self.coordinator.scatter(method, request, budget_ms)
        if missing:
            names = [self.coordinator.shard_names[shard] for shard in missing]
            if timed_out:
                raise Timeout(f"shards {names} missed the {budget_ms} ms deadline")
            raise Unavailable(f"shards {names} have no replica that answered")
        return [replies[shard] for shard in sorted(replies)]

    def _write_all(self, calls: list[tuple[int, str, Any]]) -> list[tuple[int, Any]]:
        results = []
        for shard, _, result in self.coordinator.to_all_replicas(calls):
            if isinstance(result, BlocksError):
                raise result
            results.append((shard, result))
        return results

    def _by_shard(self, doc_ids: list[str]) -> dict[int, list[int]]:
        positions: dict[int, list[int]] = {}
        for at, doc_id in enumerate(doc_ids):
            positions.setdefault(self.coordinator.ring.owner_of_document(doc_id), []).append(at)
        return positions

    def _apply_add(self, ids: Any, data: Any, attributes: list[dict[str, Value]]) -> None:
        """The shards store the vectors and their attributes, not the coordinator."""
        self.coordinator.add(ids, data, attributes)

    def save(self) -> str:
        """``Save`` on a coordinator: every replica of every shard snapshots its own data,
        and the coordinator its typeahead (with a data directory)."""
        self.checkpoint()
        self.coordinator.save()
        return "the data directory of every shard replica"

    def checkpoint(self) -> str:
        """Snapshot the typeahead counts, the coordinator's only state (with a journal)."""
        if self.journal is None:
            return ""
        return self.journal.write_snapshot(self._save_into)

    def _save_into(self, directory: str) -> None:
        counts = json.dumps(self.typeahead.counts()).encode("utf-8")
        atomic_write(os.path.join(directory, "typeahead.json"), lambda f: f.write(counts))

    def _load_from(self, directory: str) -> None:
        path = os.path.join(directory, "typeahead.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                self.typeahead.restore(json.load(handle))

    def document_count(self) -> int:
        return sum(int(reply.documents) for reply in self._all_shards("Info", _INFO))

    def index_documents(self, documents: list[tuple[str, str]]) -> int:
        if len(documents) > DOCUMENTS_PER_CALL_MAX:
            raise InvalidArgument(f"at most {DOCUMENTS_PER_CALL_MAX} documents per call")
        ids = [check_doc_id(doc_id) for doc_id, _ in documents]
        if len(set(ids)) != len(ids):
            raise InvalidArgument("document ids repeat within one call")
        for _, text in documents:
            tokenize(text)  # validates every text before anything is sent
        calls = [
            (
                shard,
                "IndexDocuments",
                search_pb2.IndexDocumentsRequest(
                    documents=[
                        search_pb2.Document(id=documents[at][0], text=documents[at][1])
                        for at in rows
                    ]
                ),
            )
            for shard, rows in self._by_shard(ids).items()
        ]
        self._write_all(calls)
        return self.document_count()

    def delete_documents(self, ids: list[str]) -> int:
        """Delete on every replica of *every* shard: a rebalance may still hold a moved
        document's old copy (``blocks.search.rebalance``). Counts add up the shards."""
        checked = [check_doc_id(doc_id) for doc_id in ids]
        request = search_pb2.DeleteDocumentsRequest(ids=checked)
        calls = [
            (shard, "DeleteDocuments", request)
            for shard in range(len(self.coordinator.shard_names))
        ]
        deleted: dict[int, int] = {}
        for shard, reply in self._write_all(calls):
            deleted[shard] = max(deleted.get(shard, 0), int(reply.deleted))
        return sum(deleted.values())

    def text_stats(self, query: str) -> CorpusStats:
        request = search_pb2.TextStatsRequest(query=query)
        return CorpusStats.combine(
            CorpusStats(int(r.num_docs), int(r.total_length), dict(r.doc_freq))
            for r in self._all_shards("TextStats", request)
        )

    def _some_shards(
        self, method: str, request: Any, absent: set[int], allow_partial: bool
    ) -> tuple[dict[int, Any], set[int]]:
        """Replies of the shards that answered and are not ``absent``, and ``absent`` grown by
        the shards that did not answer. Raises as ``_all_shards`` when a shard is missing and
        ``allow_partial`` is off, or when no shard is left."""
        if not allow_partial:
            return dict(enumerate(self._all_shards(method, request))), set()
        budget_ms = self.coordinator.deadline_ms
        answered, missing, timed_out = self.coordinator.scatter(method, request, budget_ms)
        absent = absent | set(missing)
        if len(absent) >= len(self.coordinator.shard_names):
            names = [self.coordinator.shard_names[shard] for shard in sorted(absent)]
            if timed_out:
                raise Timeout(f"shards {names} missed the {budget_ms} ms deadline")
            raise Unavailable(f"shards {names} have no replica that answered")
        return {s: reply for s, reply in answered.items() if s not in absent}, absent

    @staticmethod
    def _merge(replies: dict[int, Any], k: int) -> list[Hit]:
        best: dict[str, Hit] = {}  # by id: a rebalance may hold a document on two shards
        for shard in sorted(replies):
            for hit in replies[shard].hits:
                known = best.get(hit.id)
                if known is None or float(hit.score) > known[1]:
                    best[hit.id] = (hit.id, float(hit.score), hit.text)
        return heapq.nsmallest(k, best.values(), key=lambda hit: (-hit[1], hit[0]))

    def _bm25(
        self, query: str, k: int, absent: set[int], allow_partial: bool
    ) -> tuple[list[Hit], set[int]]:
        """Two phases over the shards not ``absent``; a shard that misses the second phase
        is dropped from the statistics and the second phase asked again (at most once per
        shard), so the scores are exact over the shards in the answer."""
        stats_request = search_pb2.TextStatsRequest(query=query)
        all_stats, absent = self._some_shards("TextStats", stats_request, absent, allow_partial)
        for _ in range(len(self.coordinator.shard_names)):
            stats = CorpusStats.combine(
                CorpusStats(int(r.num_docs), int(r.total_length), dict(r.doc_freq))
                for shard, r in all_stats.items()
                if shard not in absent
            )
            request = search_pb2.SearchTextRequest(
                query=query,
                k=k,
                mode="bm25",
                has_stats=True,
                num_docs=stats.num_docs,
                total_length=stats.total_length,
                doc_freq=dict(stats.doc_freq),
                internal=True,
            )
            replies, grown = self._some_shards("SearchText", request, absent, allow_partial)
            if grown == absent:
                return self._merge(replies, k), absent
            absent = grown
        raise Unavailable("shards kept failing during a text search")  # every round lost one

    def _semantic(
        self, query: str, k: int, absent: set[int], allow_partial: bool
    ) -> tuple[list[Hit], set[int]]:
        request = search_pb2.SearchTextRequest(query=query, k=k, mode="semantic", internal=True)
        replies, absent = self._some_shards("SearchText", request, absent, allow_partial)
        return self._merge(replies, k), absent

    def search_text_partial(
        self, query: str, k: int, mode: str, *, allow_partial: bool, record: bool = True
    ) -> tuple[list[Hit], list[int]]:
        """Ranked ``(doc id, score, text)`` and the missing shard positions.

        Without ``allow_partial`` a missing shard raises ``Timeout`` / ``Unavailable``; with
        it the hits are exact over the shards that answered every phase (``hybrid``: both
        rankings over the same shards), and those that did not are returned."""
        check_text_k(k)
        absent: set[int] = set()
        if mode in ("", "bm25"):
            hits, absent = self._bm25(query, k, absent, allow_partial)
        elif mode == "semantic":
            hits, absent = self._semantic(query, k, absent, allow_partial)
        elif mode == "hybrid":
            depth = min(K_MAX, k * HYBRID_DEPTH_FACTOR)
            for _ in range(len(self.coordinator.shard_names) + 1):
                lexical, after_lexical = self._bm25(query, depth, absent, allow_partial)
                meaning, after_meaning = self._semantic(query, depth, after_lexical, allow_partial)
                if after_meaning == after_lexical:
                    break
                absent = after_meaning  # the lexical ranking must leave out the same shards
            else:
                raise Unavailable("shards kept failing during a hybrid search")
            absent = after_meaning
            texts = {doc_id: text for doc_id, _, text in [*lexical, *meaning]}
            fused = reciprocal_rank_fusion([[h[0] for h in lexical], [h[0] for h in meaning]], k)
            hits = [(doc_id, score, texts[doc_id]) for doc_id, score in fused]
        else:
            raise InvalidArgument(f"unknown mode {mode!r}; expected bm25, semantic or hybrid")
        if record:
            self._record_query(query)  # here, as on a shard: the sub-queries are not counted
        return hits, sorted(absent)

    def search_text(
        self,
        query: str,
        k: int,
        mode: str,
        *,
        stats: CorpusStats | None = None,
        record: bool = True,
    ) -> list[Hit]:
        """Ranked ``(doc id, score, text)`` over every shard (``stats`` is not used here)."""
        hits, _ = self.search_text_partial(query, k, mode, allow_partial=False, record=record)
        return hits


_INFO = search_pb2.InfoRequest()
