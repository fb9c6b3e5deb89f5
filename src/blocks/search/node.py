"""``SearchNode``: everything one search node serves, as plain synchronous methods.

Theory of operation. A ``VectorIndex`` for raw vectors, a ``BM25Index`` plus the documents'
texts, optionally a ``MiniLMEmbedder`` with a cosine ``ExactIndex`` of document embeddings,
and a ``Typeahead`` fed by every text query. Its methods validate, mutate and answer; nothing
here knows about gRPC (``blocks.search.service`` adapts it). Documents map to vector ids
through ``doc_vector_id`` (xxh3-64 of the id, 63 bits), with the reverse map kept in memory.
Vectors may carry attributes (``MetadataStore``): logged with the add that brings them,
dropped with the vector, and ``search_vectors`` filters on them during the search.

A shared-IVF shard (``blocks.search.shared_ivf``) also takes its centroids from its
coordinator (``set_centroids``), logged like a write and kept in every snapshot.

Persistence: with a data directory the node keeps a ``SearchJournal`` there (see
``blocks.search.durable``): every mutation is logged and fsynced before it is applied and
acknowledged, ``save``, a clean stop and every ``checkpoint_records`` logged records write a
snapshot (``vectors.idx``, ``documents.json``, ``typeahead.json``, ``metadata.json`` and,
when embedding, ``embeddings.idx``), and ``load`` loads the snapshot and replays the log after it. Typeahead
counts are logged without an fsync of their own and are in every snapshot. A data directory
written before the journal existed (those files at its top) is loaded, then journaled.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import xxhash

from blocks.core.errors import Corruption, FailedPrecondition, InvalidArgument, NotFound
from blocks.search.api import K_MAX, Filter, SearchResult, VectorIndex
from blocks.search.bm25 import BM25Index, CorpusStats, check_doc_id, check_text_k
from blocks.search.durable import CHECKPOINT_RECORDS_DEFAULT, SearchJournal
from blocks.search.export import export_documents, export_vectors
from blocks.search.filtered import search_filtered
from blocks.search.hybrid import HYBRID_DEPTH_FACTOR, reciprocal_rank_fusion
from blocks.search.metadata import Expression, MetadataStore, Value
from blocks.search.rows import VectorRows
from blocks.search.tokenize import tokenize
from blocks.search.typeahead import Typeahead
from blocks.search.vectors import allowed_mask, atomic_write
from blocks.search.where import check_attribute_rows

__all__ = ["DOCUMENTS_PER_CALL_MAX", "SearchNode", "doc_vector_id"]

DOCUMENTS_PER_CALL_MAX = 10_000


def doc_vector_id(doc_id: str) -> int:
    """The vector id standing for a document in the embedding index (63-bit, stable)."""
    return xxhash.xxh3_64_intdigest(doc_id.encode("utf-8")) >> 1


class SearchNode:
    """Everything one node serves, as plain synchronous methods.

    With a ``data_dir``, ``load`` opens its ``SearchJournal``: from then on every mutation
    (``add_vectors``, ``remove_vectors``, ``train_vectors``, ``index_documents``,
    ``delete_documents``) is logged and fsynced before it is applied, so once it returns it
    survives a crash; ``save`` writes a snapshot. Callers serialise mutations (the service's
    write lock).
    """

    # True where ``vectors`` is a coordinator whose shards keep the attributes and filter.
    filters_on_shards = False

    def __init__(
        self,
        vectors: VectorIndex,
        *,
        kind: str = "exact",
        embedder: Any = None,
        data_dir: str | None = None,
        checkpoint_records: int = CHECKPOINT_RECORDS_DEFAULT,
    ) -> None:
        self.vectors = vectors
        self.kind = kind
        self.embedder = embedder
        self.data_dir = data_dir
        self.checkpoint_records = checkpoint_records
        self.journal: SearchJournal | None = None
        self.text = BM25Index()
        self.texts: dict[str, str] = {}
        self.typeahead = Typeahead()
        self.embeddings: VectorIndex | None = None
        self._doc_of_vector: dict[int, str] = {}
        # Each vector's attributes (ids added without any have no entry), for ``where``.
        self.metadata = MetadataStore()
        # A readable copy of the vectors for exports (None on a node that stores none).
        self.rows: VectorRows | None = VectorRows()
        if embedder is not None:
            from blocks.search.exact import ExactIndex

            self.embeddings = ExactIndex(int(embedder.dim), "cosine")

    # Mutations: validated, logged (durably, with a journal), applied, maybe checkpointed.

    def _log(self, record: dict[str, Any]) -> None:
        if self.journal is not None:
            self.journal.append_durable(record)

    def _maybe_checkpoint(self) -> None:
        if self.journal is not None and self.journal.should_checkpoint():
            self.checkpoint()

    def add_vectors(self, ids: Any, vectors: Any, attributes: Any = None) -> int:
        """Store vectors (``VectorIndex.add``'s contract) and, when given, one attribute
        mapping per id (``blocks.search.metadata``: validated before anything is logged, and
        logged with the vectors); returns the index's size."""
        id_array = np.ascontiguousarray(ids, dtype="<i8")
        data = np.ascontiguousarray(vectors, dtype="<f4")
        if data.ndim != 2:
            raise InvalidArgument(f"vectors must be 2-D, got shape {data.shape}")
        rows = check_attribute_rows(attributes, id_array.size)
        record = {"op": "add", "ids": id_array.tobytes(), "vectors": data.tobytes()}
        if rows:
            record["attributes"] = rows
        self._log({**record, "dim": int(data.shape[1])})
        self._apply_add(id_array, data, rows)
        self._maybe_checkpoint()
        return len(self.vectors)

    def _apply_add(self, ids: Any, data: Any, attributes: list[dict[str, Value]]) -> None:
        self.vectors.add(ids, data)
        if self.rows is not None:
            self.rows.add(ids, data)
        for vector_id, row in zip(np.asarray(ids).tolist(), attributes, strict=False):
            if row:
                self.metadata.put(vector_id, row)

    def remove_vectors(self, ids: Any) -> int:
        id_array = np.ascontiguousarray(ids, dtype="<i8")
        self._log({"op": "remove", "ids": id_array.tobytes()})
        removed = self._apply_remove(id_array)
        self._maybe_checkpoint()
        return removed

    def _apply_remove(self, ids: Any) -> int:
        removed = self.vectors.remove(ids)
        for vector_id in np.asarray(ids).tolist():
            self.metadata.delete(vector_id)
        if self.rows is not None:
            self.rows.remove(np.asarray(ids).tolist())
        return removed

    def search_vectors(
        self,
        queries: Any,
        k: int,
        allow: Filter | None,
        where: Expression | None,
        options: dict[str, Any],
    ) -> SearchResult:
        """``k`` nearest neighbours among the ids on the ``allow`` list (``None``: all) whose
        attributes match ``where`` (``None``: all). With ``where`` the filter is applied
        during the search (``search_filtered``: a faiss index's short rows are searched
        again wider), so ``k`` come back when ``k`` stored ids match."""
        if where is None:
            return self.vectors.search(queries, k, allow, **options)
        if self.filters_on_shards:
            coordinator: Any = self.vectors  # a Coordinator: search takes ``where``
            found: SearchResult = coordinator.search(queries, k, allow, where=where, **options)
            return found
        chosen = self.where_filter(allow, where)
        return search_filtered(self.vectors, queries, k, chosen, **options).result

    def where_filter(self, allow: Filter | None, where: Expression) -> Filter:
        """A ``VectorIndex`` filter: the ids on ``allow`` (``None``: any) matching ``where``."""
        chosen = self.metadata.filter_for(where)
        if allow is None:
            return chosen
        listed = np.asarray(allow, dtype=np.int64).ravel()
        return listed[allowed_mask(chosen, listed)]

    def train_vectors(self, vectors: Any) -> None:
        train = getattr(self.vectors, "train", None)
        if train is None:
            return  # an index without training (exact, Flat, HNSW): nothing to do or log
        data = np.ascontiguousarray(vectors, dtype="<f4")
        if data.ndim != 2:
            raise InvalidArgument(f"vectors must be 2-D, got shape {data.shape}")
        self._log({"op": "train", "vectors": data.tobytes(), "dim": int(data.shape[1])})
        train(data)
        self._maybe_checkpoint()

    def set_centroids(self, centroids: Any) -> None:
        """A shared-IVF shard's centroids, trained once for the collection by a coordinator
        (``blocks.search.coarse``): logged and fsynced like a write, then applied."""
        setter = getattr(self.vectors, "set_centroids", None)
        if setter is None:
            raise InvalidArgument("this node's index takes no centroids (serve --kind shared-ivf)")
        data = np.ascontiguousarray(centroids, dtype="<f4")
        if data.ndim != 2:
            raise InvalidArgument(f"centroids must be 2-D, got shape {data.shape}")
        current = getattr(self.vectors, "centroids")()  # noqa: B009 - a shared-IVF index
        if current is not None and np.array_equal(current, data):
            return  # already these: nothing to log
        self._log({"op": "centroids", "vectors": data.tobytes(), "dim": int(data.shape[1])})
        setter(data)
        self._maybe_checkpoint()

    def index_documents(self, documents: list[tuple[str, str]]) -> int:
        if len(documents) > DOCUMENTS_PER_CALL_MAX:
            raise InvalidArgument(f"at most {DOCUMENTS_PER_CALL_MAX} documents per call")
        ids = [check_doc_id(doc_id) for doc_id, _ in documents]
        if len(set(ids)) != len(ids):
            raise InvalidArgument("document ids repeat within one call")
        for _, text in documents:
            tokenize(text)  # validates every text before anything changes
        self._log({"op": "index-docs", "documents": [[d, t] for d, t in documents]})
        self._apply_documents(documents)
        self._maybe_checkpoint()
        return len(self.texts)

    def _apply_documents(self, documents: list[tuple[str, str]]) -> None:
        ids = [doc_id for doc_id, _ in documents]
        vectors = None
        if self.embedder is not None and documents:
            vectors = self.embedder.embed([text for _, text in documents])
        for doc_id, text in documents:
            self.text.upsert(doc_id, text)
            self.texts[doc_id] = text
        if self.embeddings is not None and vectors is not None:
            vector_ids = np.array([doc_vector_id(doc_id) for doc_id in ids], dtype=np.int64)
            self.embeddings.remove(vector_ids)
            self.embeddings.add(vector_ids, vectors)
            self._doc_of_vector.update(zip(vector_ids.tolist(), ids, strict=True))

    def delete_documents(self, ids: list[str]) -> int:
        for doc_id in ids:
            check_doc_id(doc_id)
        self._log({"op": "delete-docs", "ids": list(ids)})
        deleted = self._apply_delete(ids)
        self._maybe_checkpoint()
        return deleted

    def _apply_delete(self, ids: list[str]) -> int:
        deleted = 0
        for doc_id in ids:
            if self.text.delete(doc_id):
                deleted += 1
                del self.texts[doc_id]
                if self.embeddings is not None:
                    vector_id = doc_vector_id(doc_id)
                    self.embeddings.remove([vector_id])
                    self._doc_of_vector.pop(vector_id, None)
        return deleted

    def apply(self, record: dict[str, Any]) -> None:
        """Apply one journal record (replay). Raises what the original call raised."""
        op = record.get("op")
        if op == "add":
            data = _record_rows(record)
            ids = np.frombuffer(record["ids"], dtype="<i8").copy()  # writable, as above
            self._apply_add(ids, data, list(record.get("attributes", [])))
        elif op == "remove":
            self._apply_remove(np.frombuffer(record["ids"], dtype="<i8"))
        elif op == "train":
            data = _record_rows(record)
            getattr(self.vectors, "train")(data)  # noqa: B009 - only logged for trainable indexes
        elif op == "centroids":
            data = _record_rows(record)
            getattr(self.vectors, "set_centroids")(data)  # noqa: B009 - logged for shared IVF
        elif op == "index-docs":
            self._apply_documents([(str(d), str(t)) for d, t in record["documents"]])
        elif op == "delete-docs":
            self._apply_delete([str(d) for d in record["ids"]])
        elif op == "query":
            self.typeahead.record(str(record["phrase"]))
        else:
            raise Corruption(f"unknown search log record {op!r}")

    def document_count(self) -> int:
        return len(self.texts)

    def text_stats(self, query: str) -> CorpusStats:
        """This node's BM25 statistics for the query's terms (a coordinator's first phase)."""
        return self.text.stats(sorted(set(tokenize(query))))

    def search_text(
        self,
        query: str,
        k: int,
        mode: str,
        *,
        stats: CorpusStats | None = None,
        record: bool = True,
    ) -> list[tuple[str, float, str]]:
        """Ranked ``(doc id, score, text)``; ``stats``: corpus-wide BM25 statistics to score
        with; ``record``: count the query in the typeahead (a coordinator's sub-query is not)."""
        check_text_k(k)
        if mode in ("", "bm25"):
            hits = [(h.doc_id, h.score) for h in self.text.search(query, k, stats=stats)]
        elif mode == "semantic":
            hits = self._semantic_hits(query, k)
        elif mode == "hybrid":
            depth = min(K_MAX, k * HYBRID_DEPTH_FACTOR)
            lexical = [h.doc_id for h in self.text.search(query, depth)]
            meaning = [doc_id for doc_id, _ in self._semantic_hits(query, depth)]
            hits = reciprocal_rank_fusion([lexical, meaning], k)
        else:
            raise InvalidArgument(f"unknown mode {mode!r}; expected bm25, semantic or hybrid")
        if record:
            self._record_query(query)
        return [(doc_id, score, self.texts[doc_id]) for doc_id, score in hits]

    def _record_query(self, query: str) -> None:
        """Count a served text query in the typeahead (a blank one is not counted)."""
        if query.strip():
            self.typeahead.record(query)
            if self.journal is not None:  # soft: a count is not worth an fsync per query
                self.journal.append_soft({"op": "query", "phrase": query})
                self._maybe_checkpoint()

    def _semantic_hits(self, query: str, k: int) -> list[tuple[str, float]]:
        if self.embedder is None or self.embeddings is None:
            raise InvalidArgument("this node does not embed text (start it with --embed)")
        if len(self.embeddings) == 0:
            return []
        result = self.embeddings.search(self.embedder.embed([query]), min(k, K_MAX))
        return [
            (self._doc_of_vector[i], float(d))
            for i, d in zip(result.ids[0].tolist(), result.distances[0].tolist(), strict=True)
            if i >= 0
        ]

    # Exports (a rebalance reads what this shard holds).

    def export_vectors(self, request: Any) -> Any:
        """An ``ExportVectorsReply`` for an ``ExportRequest`` (``blocks.search.export``)."""
        if self.rows is None:
            raise InvalidArgument("this node stores no vectors of its own")
        return export_vectors(self.rows, request, self.metadata)

    def export_documents(self, request: Any) -> Any:
        """An ``ExportDocumentsReply`` for an ``ExportRequest``."""
        return export_documents(self.texts, request)

    # Persistence.

    def save(self) -> str:
        """Write a snapshot (with a journal) or the legacy files; returns where."""
        if self.data_dir is None:
            raise NotFound("this node has no data directory")
        if self.journal is None:
            os.makedirs(self.data_dir, exist_ok=True)
            self._save_into(self.data_dir)
            return self.data_dir
        return self.journal.write_snapshot(self._save_into)

    def checkpoint(self) -> str:
        """Snapshot this node's own state (a coordinator's shards are not asked)."""
        return self.save()

    def _save_into(self, directory: str) -> None:
        self.vectors.save(os.path.join(directory, "vectors.idx"))
        if self.rows is not None:
            self.rows.save(directory)
        if self.embeddings is not None:
            self.embeddings.save(os.path.join(directory, "embeddings.idx"))
        payload = json.dumps(self.texts).encode("utf-8")
        atomic_write(os.path.join(directory, "documents.json"), lambda f: f.write(payload))
        counts = json.dumps(self.typeahead.counts()).encode("utf-8")
        atomic_write(os.path.join(directory, "typeahead.json"), lambda f: f.write(counts))
        attributes = self.metadata.to_json()
        atomic_write(os.path.join(directory, "metadata.json"), lambda f: f.write(attributes))

    def load(self) -> None:
        """Open the journal, load its snapshot (or a legacy save), replay the log after it."""
        if self.data_dir is None:
            return
        self.journal = SearchJournal(self.data_dir, checkpoint_records=self.checkpoint_records)
        self._load_from(self.journal.snapshot_path or self.data_dir)
        for record in self.journal.replay():
            try:
                self.apply(record)
            except (InvalidArgument, FailedPrecondition):
                self.journal.replay_skipped += 1  # it failed the same way when first called

    def _load_from(self, directory: str) -> None:
        path = os.path.join(directory, "vectors.idx")
        if os.path.exists(path):
            self.vectors.load(path)
            if self.rows is not None and not self.rows.load(directory):
                self.rows.complete = len(self.vectors) == 0
        documents_path = os.path.join(directory, "documents.json")
        if os.path.exists(documents_path):
            with open(documents_path, encoding="utf-8") as handle:
                texts: dict[str, str] = json.load(handle)
            for doc_id, text in texts.items():
                self.text.upsert(doc_id, text)
            self.texts = texts
        embeddings_path = os.path.join(directory, "embeddings.idx")
        if self.embeddings is not None and os.path.exists(embeddings_path):
            self.embeddings.load(embeddings_path)
            self._doc_of_vector = {doc_vector_id(d): d for d in self.texts}
        typeahead_path = os.path.join(directory, "typeahead.json")
        if os.path.exists(typeahead_path):
            with open(typeahead_path, encoding="utf-8") as handle:
                self.typeahead.restore(json.load(handle))
        metadata_path = os.path.join(directory, "metadata.json")
        if os.path.exists(metadata_path):
            with open(metadata_path, "rb") as binary:
                self.metadata.restore_json(binary.read())

    def close(self) -> None:
        """Release the journal (fsyncing what it holds). Idempotent."""
        if self.journal is not None:
            self.journal.close()


def _record_rows(record: dict[str, Any]) -> Any:
    """A log record's vectors as a writable ``(rows, dim)`` float32 array (torch warns about,
    and may not write through, a read-only buffer)."""
    rows = np.frombuffer(record["vectors"], dtype="<f4").reshape(-1, int(record["dim"]))
    return rows.copy()
