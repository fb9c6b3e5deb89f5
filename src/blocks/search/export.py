"""The ``ExportVectors`` / ``ExportDocuments`` RPCs' logic: which stored rows a page holds.

Theory of operation. A rebalance (``blocks.search.rebalance``) reads from a shard what the
new ring gives to another shard, and later reads back what it copied to check it. An
``ExportRequest`` therefore selects either

* exactly the listed ids (``by_ids``; those present, at most ``EXPORT_ROWS_MAX`` asked), or
* the rows that the ring over ``ring_names`` gives to ``owner``, in ascending id order after
  a cursor, at most ``limit`` rows and ``EXPORT_SCAN_MAX`` ids examined per call
  (``blocks.search.rows.select_page``), so a call is bounded however few rows match.

Pure functions of the node's stored rows and the request; the service runs them under its
read lock.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from blocks.core.errors import InvalidArgument
from blocks.search import search_pb2
from blocks.search.metadata import MetadataStore
from blocks.search.routing import ShardRing
from blocks.search.rows import EXPORT_ROWS_MAX, VectorRows, select_page
from blocks.search.where import attributes_to_wire
from blocks.search.wire import encode_batch

__all__ = ["export_documents", "export_vectors", "page_limit"]


def page_limit(request: Any) -> int:
    """The request's ``limit``, 0 or anything above ``EXPORT_ROWS_MAX`` meaning the maximum."""
    limit = int(request.limit)
    return EXPORT_ROWS_MAX if limit == 0 or limit > EXPORT_ROWS_MAX else limit


def _ring_predicate(request: Any) -> tuple[ShardRing, int]:
    ring = ShardRing(list(request.ring_names))
    if request.owner not in ring.names:
        raise InvalidArgument(f"owner {request.owner!r} is not on the ring {ring.names}")
    return ring, ring.names.index(request.owner)


def _with_attributes(reply: Any, metadata: MetadataStore | None) -> Any:
    """``reply`` with one ``Attributes`` per id when any of its ids has some."""
    if metadata is not None and len(metadata):
        rows = [metadata.get(vector_id) for vector_id in reply.ids]
        if any(rows):
            reply.attributes.extend(attributes_to_wire(row) for row in rows)
    return reply


def export_vectors(rows: VectorRows, request: Any, metadata: MetadataStore | None = None) -> Any:
    """An ``ExportVectorsReply`` (see the module docstring), with the ids' attributes."""
    rows.require_complete()
    if request.by_ids:
        if len(request.ids) > EXPORT_ROWS_MAX:
            raise InvalidArgument(f"at most {EXPORT_ROWS_MAX} ids per export")
        ids, data = rows.get(request.ids)
        reply = search_pb2.ExportVectorsReply(
            ids=ids.tolist(), vectors=encode_batch(data), done=True
        )
        return _with_attributes(reply, metadata)
    ring, owner = _ring_predicate(request)
    after = int(request.after_id) if request.has_after else None
    chosen, cursor, done = select_page(
        rows.sorted_ids().tolist(),
        after,
        lambda vector_id: ring.owner_of_vector(vector_id) == owner,
        limit=page_limit(request),
    )
    ids, data = rows.get(chosen)
    assert ids.tolist() == chosen
    reply = search_pb2.ExportVectorsReply(
        ids=chosen,
        vectors=encode_batch(data),
        next_after_id=int(cursor if cursor is not None else np.iinfo(np.int64).min),
        done=done,
    )
    return _with_attributes(reply, metadata)


def export_documents(texts: dict[str, str], request: Any) -> Any:
    """An ``ExportDocumentsReply`` (see the module docstring)."""
    if request.by_ids:
        if len(request.doc_ids) > EXPORT_ROWS_MAX:
            raise InvalidArgument(f"at most {EXPORT_ROWS_MAX} ids per export")
        present = [doc_id for doc_id in request.doc_ids if doc_id in texts]
        return search_pb2.ExportDocumentsReply(
            documents=[search_pb2.Document(id=d, text=texts[d]) for d in present], done=True
        )
    ring, owner = _ring_predicate(request)
    after = str(request.after_doc) if request.has_after else None
    chosen, cursor, done = select_page(
        sorted(texts),
        after,
        lambda doc_id: ring.owner_of_document(doc_id) == owner,
        limit=page_limit(request),
    )
    return search_pb2.ExportDocumentsReply(
        documents=[search_pb2.Document(id=d, text=texts[d]) for d in chosen],
        next_after_doc=cursor or "",
        done=done,
    )
