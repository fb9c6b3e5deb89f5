"""The search node's gRPC service: vectors, documents (BM25 and by meaning), typeahead.

Theory of operation. ``SearchNode`` (``blocks.search.node``) is the synchronous heart;
``SearchService`` adapts it to the generated servicer. Index work is CPU-bound and would stall
the event loop, so each call runs in a worker thread (``asyncio.to_thread``) under a
readers-writer lock: searches run concurrently with each other, a mutation runs alone (the
``VectorIndex`` contract). On a coordinator node (``serve --remote-shards``) the vector index
is a ``Coordinator``: a search carries the caller's deadline and ``allow_partial`` to it, and
the reply says which shards, if any, are missing from the answer. A shard node may also
serve its vector searches on a data port (``blocks.search.datapath``: the core TCP transport,
announced in ``InfoReply.data_port``), which a coordinator uses instead of gRPC.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from blocks.core.errors import InvalidArgument
from blocks.core.server import Server
from blocks.search import search_pb2, search_pb2_grpc
from blocks.search.api import VectorIndex
from blocks.search.bm25 import CorpusStats
from blocks.search.coarse import SHARED_IVF_KIND, decode_probe_lists, parse_nlist
from blocks.search.coordinator_index import Coordinator
from blocks.search.coordinator_node import CoordinatorNode
from blocks.search.datapath import SearchDataPath
from blocks.search.filtered import search_filtered
from blocks.search.node import DOCUMENTS_PER_CALL_MAX, SearchNode, doc_vector_id
from blocks.search.vectors import DIM_MAX
from blocks.search.where import attributes_from_wire, expression_from_wire
from blocks.search.wire import decode_batch, encode_batch, fill_reply

__all__ = [
    "DOCUMENTS_PER_CALL_MAX",
    "SearchNode",
    "SearchService",
    "build_server",
    "decode_batch",
    "doc_vector_id",
    "encode_batch",
]

T = TypeVar("T")
# Kept from the caller's deadline for the reply's way back: 10% of it, at least this.
DEADLINE_MARGIN_MS = 50


class _ReadWriteLock:
    """Many readers or one writer, for coroutines (writers wait for readers to drain)."""

    def __init__(self) -> None:
        self._readers = 0
        self._writer = False
        self._changed = asyncio.Condition()

    async def run(self, func: Callable[[], T], *, write: bool) -> T:
        async with self._changed:
            await self._changed.wait_for(
                lambda: not self._writer and (not write or not self._readers)
            )
            if write:
                self._writer = True
            else:
                self._readers += 1
        try:
            return await asyncio.to_thread(func)
        finally:
            async with self._changed:
                if write:
                    self._writer = False
                else:
                    self._readers -= 1
                self._changed.notify_all()


class SearchService(search_pb2_grpc.SearchServicer):
    """The generated servicer over a ``SearchNode``."""

    def __init__(self, node: SearchNode) -> None:
        self.node = node
        self._lock = _ReadWriteLock()
        self.data_port = 0  # where the data path listens once started; 0: none

    async def Info(self, request: Any, context: Any) -> Any:
        node = self.node

        def counts() -> tuple[int, int]:  # a coordinator asks its shards: not on the loop
            return len(node.vectors), node.document_count()

        vectors, documents = await asyncio.to_thread(counts)
        return search_pb2.InfoReply(
            dim=node.vectors.dim,
            metric=node.vectors.metric.value,
            kind=node.kind,
            vectors=vectors,
            documents=documents,
            embeds=node.embedder is not None,
            nlist=_shared_nlist(node.vectors),
            data_port=self.data_port,
        )

    async def Train(self, request: Any, context: Any) -> Any:
        data = decode_batch(request, self.node.vectors.dim)
        await self._lock.run(lambda: self.node.train_vectors(data), write=True)
        return search_pb2.TrainReply()

    async def AddVectors(self, request: Any, context: Any) -> Any:
        data = decode_batch(request.vectors, self.node.vectors.dim)
        ids = np.array(request.ids, dtype=np.int64)
        attributes = [attributes_from_wire(row) for row in request.attributes]
        size = await self._lock.run(
            lambda: self.node.add_vectors(ids, data, attributes), write=True
        )
        return search_pb2.AddVectorsReply(size=size)

    async def RemoveVectors(self, request: Any, context: Any) -> Any:
        ids = np.array(request.ids, dtype=np.int64)
        removed = await self._lock.run(lambda: self.node.remove_vectors(ids), write=True)
        return search_pb2.RemoveVectorsReply(removed=removed)

    async def SearchVectors(self, request: Any, context: Any) -> Any:
        """``context`` is ``None`` on the data path (never on a coordinator node)."""
        queries = decode_batch(request.queries, self.node.vectors.dim)
        options: dict[str, Any] = {}
        if request.nprobe:
            options["nprobe"] = request.nprobe
        if request.ef_search:
            options["ef_search"] = request.ef_search
        filter_ids = np.array(request.filter_ids, dtype=np.int64) if request.has_filter else None
        where = expression_from_wire(request.where) if request.HasField("where") else None
        k = int(request.k)
        if request.probe_lists or request.probes:  # a shared-IVF shard, lists chosen upstream
            return await self._search_preassigned(request, queries, k, filter_ids, where)
        if isinstance(self.node.vectors, Coordinator):
            options["allow_partial"] = request.allow_partial
            remaining_s = None if context is None else context.time_remaining()
            if remaining_s is not None:  # answer before the caller gives up
                margin_ms = max(DEADLINE_MARGIN_MS, int(remaining_s * 100))
                options["timeout_ms"] = max(1, int(remaining_s * 1000) - margin_ms)

        def run() -> Any:
            return self.node.search_vectors(queries, k, filter_ids, where, options)

        result = await self._lock.run(run, write=False)
        reply = search_pb2.SearchVectorsReply(
            partial=result.partial,
            missing_shards=list(result.missing_shards),
            missing_shard_names=list(result.missing_shard_names),
        )
        fill_reply(reply, result.ids, result.distances, packed=request.packed_reply)
        return reply

    async def _search_preassigned(
        self, request: Any, queries: Any, k: int, filter_ids: Any, where: Any
    ) -> Any:
        index: Any = self.node.vectors
        if not _shared_nlist(index):
            raise InvalidArgument("probe lists are for shared-IVF shards (serve --kind shared-ivf)")
        lists = decode_probe_lists(
            request.probe_lists, int(request.queries.rows), int(request.probes), index.nlist
        )

        def run() -> Any:
            if where is None:
                return index.search_preassigned(queries, k, lists, filter_ids)
            chosen = self.node.where_filter(filter_ids, where)
            scanned = index.search_preassigned(queries, k, lists, chosen)
            # Rows short of the matching ids scan more lists (the shard's own coarse search)
            return search_filtered(
                index, queries, k, chosen, nprobe=max(1, lists.shape[1]), first=scanned
            ).result

        result = await self._lock.run(run, write=False)
        reply = search_pb2.SearchVectorsReply()
        fill_reply(reply, result.ids, result.distances, packed=request.packed_reply)
        return reply

    async def SetCentroids(self, request: Any, context: Any) -> Any:
        data = decode_batch(request, self.node.vectors.dim)
        await self._lock.run(lambda: self.node.set_centroids(data), write=True)
        return search_pb2.TrainReply()

    async def GetCentroids(self, request: Any, context: Any) -> Any:
        index: Any = self.node.vectors
        if not _shared_nlist(index):
            raise InvalidArgument("only a shared-IVF shard has centroids to give")
        centroids = await self._lock.run(index.centroids, write=False)
        if centroids is None:
            return search_pb2.VectorBatch(rows=0, dim=index.dim)
        return encode_batch(centroids)

    async def IndexDocuments(self, request: Any, context: Any) -> Any:
        documents = [(d.id, d.text) for d in request.documents]
        total = await self._lock.run(lambda: self.node.index_documents(documents), write=True)
        return search_pb2.IndexDocumentsReply(documents=total)

    async def DeleteDocuments(self, request: Any, context: Any) -> Any:
        ids = list(request.ids)
        deleted = await self._lock.run(lambda: self.node.delete_documents(ids), write=True)
        return search_pb2.DeleteDocumentsReply(deleted=deleted)

    async def SearchText(self, request: Any, context: Any) -> Any:
        query, k, mode = request.query, int(request.k or 10), request.mode
        stats = None
        if request.has_stats:
            doc_freq = {term: int(count) for term, count in request.doc_freq.items()}
            stats = CorpusStats(int(request.num_docs), int(request.total_length), doc_freq)
        record, allow_partial = not request.internal, request.allow_partial
        node = self.node

        def run() -> tuple[list[tuple[str, float, str]], list[int], list[str]]:
            if isinstance(node, CoordinatorNode):  # a partial answer names what is missing
                hits, missing = node.search_text_partial(
                    query, k, mode, allow_partial=allow_partial, record=record
                )
                return hits, missing, [node.coordinator.shard_names[s] for s in missing]
            return node.search_text(query, k, mode, stats=stats, record=record), [], []

        # A write: the query is also recorded in the typeahead.
        hits, missing, names = await self._lock.run(run, write=True)
        return search_pb2.SearchTextReply(
            hits=[search_pb2.TextHit(id=i, score=s, text=t) for i, s, t in hits],
            partial=bool(missing),
            missing_shards=missing,
            missing_shard_names=names,
        )

    async def TextStats(self, request: Any, context: Any) -> Any:
        query = request.query
        stats = await self._lock.run(lambda: self.node.text_stats(query), write=False)
        return search_pb2.TextStatsReply(
            num_docs=stats.num_docs, total_length=stats.total_length, doc_freq=stats.doc_freq
        )

    async def Suggest(self, request: Any, context: Any) -> Any:
        prefix, k = request.prefix, int(request.k or self.node.typeahead.k)
        found = await self._lock.run(lambda: self.node.typeahead.suggest(prefix, k), write=True)
        return search_pb2.SuggestReply(
            completions=[search_pb2.Completion(phrase=p, count=c) for p, c in found]
        )

    async def ExportVectors(self, request: Any, context: Any) -> Any:
        return await self._lock.run(lambda: self.node.export_vectors(request), write=False)

    async def ExportDocuments(self, request: Any, context: Any) -> Any:
        return await self._lock.run(lambda: self.node.export_documents(request), write=False)

    async def Save(self, request: Any, context: Any) -> Any:
        path = await self._lock.run(self.node.save, write=True)
        return search_pb2.SaveReply(path=path)


def _shared_nlist(index: Any) -> int:
    """A shared-IVF shard's number of lists (``blocks.search.shared_ivf``), else 0."""
    if not hasattr(index, "search_preassigned") or not hasattr(index, "centroids"):
        return 0
    return int(index.nlist)


def make_vector_index(
    dim: int,
    metric: str,
    *,
    kind: str = "exact",
    spec: str = "Flat",
    shards: int = 1,
    device: str = "cpu",
) -> VectorIndex:
    """The vector index a node serves: exact (torch), faiss, or a shared-IVF shard
    (``shared-ivf``, ``spec`` ``IVF<nlist>[,Flat]``: centroids from its coordinator,
    ``blocks.search.coarse``), optionally sharded locally (not ``shared-ivf``).

    ``device`` (``cpu`` or ``cuda``) goes to every index; ``cuda`` where torch (exact) or
    faiss (faiss) sees no GPU raises ``InvalidArgument``, never a silent CPU fallback.
    """
    if not 1 <= dim <= DIM_MAX or not 1 <= shards <= 64:
        raise InvalidArgument("dim must be in 1..65536 and shards in 1..64")

    def one() -> VectorIndex:
        if kind == "exact":
            from blocks.search.exact import ExactIndex

            return ExactIndex(dim, metric, device=device)
        if kind == "faiss":
            from blocks.search.faiss_index import FaissIndex

            return FaissIndex(dim, spec, metric, device=device)
        if kind == SHARED_IVF_KIND:
            if device != "cpu" or shards != 1:
                raise InvalidArgument("a shared-IVF shard runs on the CPU, one local shard")
            from blocks.search.shared_ivf import SharedIVFIndex

            return SharedIVFIndex(dim, parse_nlist(spec), metric)
        raise InvalidArgument(f"unknown index kind {kind!r}; expected exact, faiss or shared-ivf")

    if shards == 1:
        return one()
    from blocks.search.sharded import ShardedIndex

    return ShardedIndex.build(one, shards)


def build_server(
    node: SearchNode,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    data_path: bool = False,
) -> tuple[Server, SearchService]:
    """A ``Server`` (not yet started) serving ``node``; loads its data dir on start.

    ``data_path``: also serve vector searches on a data port (``blocks.search.datapath``,
    plaintext TCP on ``host``, same token; ``service.data_port`` once started). Not for a
    coordinator node, nor with TLS (the caller decides: ``serve`` does)."""
    if data_path and isinstance(node.vectors, Coordinator):
        raise InvalidArgument("a coordinator node serves no data path")
    service = SearchService(node)
    server = Server(host=host, port=port, token=token, name="search")

    async def start() -> None:
        await asyncio.to_thread(node.load)

    async def stop() -> None:
        if node.data_dir is not None:
            try:
                await asyncio.to_thread(node.checkpoint)
            finally:
                node.close()

    server.add_component(start, stop, name="search-data")
    if data_path:
        listener = SearchDataPath(
            lambda request: service.SearchVectors(request, None), host, token=token
        )

        async def start_data_path() -> None:
            await listener.start()
            service.data_port = listener.port

        async def stop_data_path() -> None:
            service.data_port = 0
            await listener.close()

        server.add_component(start_data_path, stop_data_path, name="search-data-path")
    server.add_service(
        search_pb2_grpc.add_SearchServicer_to_server, service, health_name="blocks.search.Search"
    )
    return server, service
