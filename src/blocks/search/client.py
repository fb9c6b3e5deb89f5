"""A blocking client for a search node; it is itself a ``VectorIndex``.

Theory of operation: ``SearchClient`` speaks the ``blocks.search.Search`` gRPC service over a
synchronous channel, so it can be used from plain code, the CLI, and as a *remote shard*
inside ``ShardedIndex`` (whose scatter-gather runs each shard in a worker thread). Every call
carries a deadline (``timeout_s``); a failed call raises the ``BlocksError`` class the server
raised, and a missed deadline raises ``Timeout`` and an unreachable node ``Unavailable``,
both retryable, which is what lets a sharded index fail over to another replica.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from blocks.core.errors import InvalidArgument, error_from_status
from blocks.core.rpc import AUTHORIZATION_METADATA_KEY, channel_options, validate_token
from blocks.search import search_pb2, search_pb2_grpc
from blocks.search.api import Filter, Metric, SearchResult
from blocks.search.vectors import as_ids, as_vectors, check_k
from blocks.search.where import (
    as_expression,
    attributes_to_wire,
    check_attribute_rows,
    fill_search_filter,
)
from blocks.search.wire import decode_reply, encode_batch, fill_batch

__all__ = ["SearchClient", "TextResult"]


@dataclass(frozen=True, slots=True)
class TextResult:
    """A text search's hits (``id``, ``score``, ``text``), flagged ``partial`` when a
    coordinator answered without ``missing_shard_names``."""

    hits: list[dict[str, Any]]
    partial: bool = False
    missing_shard_names: tuple[str, ...] = ()


class SearchClient:
    """``SearchClient("127.0.0.1:7400")``: vectors, documents and suggestions on one node."""

    def __init__(self, address: str, *, token: str | None = None, timeout_s: float = 30.0) -> None:
        if timeout_s <= 0:
            raise InvalidArgument("timeout_s must be positive")
        self.address = address
        self._channel = grpc.insecure_channel(address, options=channel_options())
        self._stub: Any = search_pb2_grpc.SearchStub(self._channel)  # type: ignore[no-untyped-call]
        self._metadata = (
            ((AUTHORIZATION_METADATA_KEY, f"Bearer {validate_token(token)}"),) if token else ()
        )
        self._timeout_s = timeout_s
        self._info: Any = None

    def _call(self, method: str, request: Any, timeout_s: float | None = None) -> Any:
        try:
            return getattr(self._stub, method)(
                request, timeout=timeout_s or self._timeout_s, metadata=self._metadata
            )
        except grpc.RpcError as error:
            failed: Any = error  # a grpc.Call at run time; RpcError's stub lacks the methods
            code, details, trailing = failed.code(), failed.details(), failed.trailing_metadata()
            raise error_from_status(code, details or "", trailing or ()) from None

    def info(self) -> dict[str, Any]:
        reply = self._call("Info", search_pb2.InfoRequest())
        self._info = reply
        return {
            "dim": reply.dim,
            "metric": reply.metric,
            "kind": reply.kind,
            "vectors": reply.vectors,
            "documents": reply.documents,
            "embeds": reply.embeds,
        }

    def _node_info(self) -> Any:
        if self._info is None:
            self.info()
        return self._info

    @property
    def dim(self) -> int:
        return int(self._node_info().dim)

    @property
    def metric(self) -> Metric:
        return Metric.parse(self._node_info().metric)

    def __len__(self) -> int:
        return int(self.info()["vectors"])

    def train(self, vectors: Any) -> None:
        self._call("Train", encode_batch(as_vectors(vectors, self.dim)))

    def add(self, ids: Any, vectors: Any, attributes: Sequence[Any] | None = None) -> None:
        """Store vectors and, when given, one attribute mapping per id (str, int, float or
        bool values; ``blocks.search.metadata``), which ``search(where=...)`` filters on."""
        data = as_vectors(vectors, self.dim)
        ids_np = as_ids(ids, expected=data.shape[0])
        rows = check_attribute_rows(attributes, ids_np.size)
        request = search_pb2.AddVectorsRequest(
            ids=ids_np.tolist(), attributes=[attributes_to_wire(row) for row in rows]
        )
        fill_batch(request.vectors, data)
        self._call("AddVectors", request)

    def remove(self, ids: Any) -> int:
        reply = self._call(
            "RemoveVectors", search_pb2.RemoveVectorsRequest(ids=as_ids(ids).tolist())
        )
        return int(reply.removed)

    def search(
        self,
        queries: Any,
        k: int,
        filter: Filter | None = None,
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
        timeout_s: float | None = None,
        allow_partial: bool = False,
        where: Any = None,
    ) -> SearchResult:
        """``allow_partial``: a coordinator may answer without missing shards, flagged in
        ``partial``, ``missing_shards`` and ``missing_shard_names``. ``where``: only ids whose
        attributes match, as an ``Expression`` or its JSON form (``blocks.search.where``),
        applied during the search so ``k`` come back when ``k`` stored ids match."""
        k = check_k(k)
        data = as_vectors(queries, self.dim)
        request = search_pb2.SearchVectorsRequest(
            k=k,
            nprobe=nprobe or 0,
            ef_search=ef_search or 0,
            allow_partial=allow_partial,
            packed_reply=True,
        )
        fill_search_filter(request, filter, as_expression(where))
        fill_batch(request.queries, data)
        reply = self._call("SearchVectors", request, timeout_s)
        ids, distances = decode_reply(reply)
        return SearchResult(
            ids=ids,
            distances=distances,
            partial=reply.partial,
            missing_shards=tuple(reply.missing_shards),
            missing_shard_names=tuple(reply.missing_shard_names),
        )

    def save(self, path: str = "") -> None:
        """Ask the node to save into its own data directory (``path`` is ignored)."""
        self._call("Save", search_pb2.SaveRequest())

    def load(self, path: str) -> None:
        raise InvalidArgument("a remote node loads its own data directory when it starts")

    def index_documents(self, documents: Sequence[tuple[str, str]]) -> int:
        request = search_pb2.IndexDocumentsRequest(
            documents=[search_pb2.Document(id=i, text=t) for i, t in documents]
        )
        return int(self._call("IndexDocuments", request).documents)

    def delete_documents(self, ids: Sequence[str]) -> int:
        return int(
            self._call("DeleteDocuments", search_pb2.DeleteDocumentsRequest(ids=list(ids))).deleted
        )

    def search_text(self, query: str, k: int = 10, mode: str = "bm25") -> list[dict[str, Any]]:
        """Hits over every shard (a coordinator with a shard missing raises)."""
        return self.search_text_partial(query, k, mode, allow_partial=False).hits

    def search_text_partial(
        self,
        query: str,
        k: int = 10,
        mode: str = "bm25",
        *,
        allow_partial: bool = True,
        timeout_s: float | None = None,
    ) -> TextResult:
        """Hits and, from a coordinator with ``allow_partial``, which shards are missing
        (then the hits are exact over the shards that answered)."""
        request = search_pb2.SearchTextRequest(
            query=query, k=k, mode=mode, allow_partial=allow_partial
        )
        reply = self._call("SearchText", request, timeout_s)
        return TextResult(
            hits=[{"id": h.id, "score": h.score, "text": h.text} for h in reply.hits],
            partial=reply.partial,
            missing_shard_names=tuple(reply.missing_shard_names),
        )

    def suggest(self, prefix: str, k: int = 10) -> list[tuple[str, int]]:
        reply = self._call("Suggest", search_pb2.SuggestRequest(prefix=prefix, k=k))
        return [(c.phrase, int(c.count)) for c in reply.completions]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> SearchClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
