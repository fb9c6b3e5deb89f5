"""Moving vectors and documents to the shard the ring now names: copy, verify, delete.

Theory of operation. Shards are placed on ``ShardRing`` by name, so when the shard list
changes (``blocks search rebalance --from-shards OLD --to-shards NEW``) only the ids whose
owner differs between the two rings must move: adding a fifth shard to four moves about a
fifth of the ids, all of them to the new shard. For every shard ``S`` of the old list and
every other shard ``T`` of the new one, page by page (``ExportVectors`` /
``ExportDocuments`` on a replica of ``S``, asking for what the new ring gives ``T``):

1. **copy**: each replica of ``T`` is asked which of the page's ids it already holds
   (``by_ids`` export) and is sent only the others, each vector with its attributes (the
   export carries them); what ``T`` holds wins, as a write routed to ``T`` by the new ring is
   newer than ``S``'s copy;
2. **verify**: every replica of ``T`` holds every id of the page (else the run stops with
   ``Unavailable`` before anything is deleted);
3. **removed meanwhile**: ids no longer on ``S`` were removed by a client while the page was
   in flight (a coordinator's removes go to every shard); they are removed from ``T`` too;
4. **delete**: the page's ids are removed from every replica of ``S``.

Every step is idempotent (ids already copied are skipped, deletes of absent ids are no-ops,
the export reads only what ``S`` still holds), so a run that crashed or failed midway is
finished by running it again. Until a page's delete, its ids are on both shards: a
coordinator's merge keeps one occurrence of an id (``merge_topk(unique_ids=True)``) and
document hits are merged by id, so vector searches stay exact throughout. BM25 statistics
count a document held twice twice until its delete (scores shift slightly for that window).

Shared-IVF shards (``blocks.search.coarse``): before anything moves, a shard without the
collection's centroids (a new one) is given them, so the vectors copied to it are filed under
the same lists as everywhere else.

The coordinators must be switched to the new shard list *before* the run, so new writes are
routed by the new ring; reads ask every shard, so a moved id is found wherever it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from blocks.core.errors import BlocksError, InvalidArgument, Unavailable
from blocks.search import search_pb2
from blocks.search.api import Metric
from blocks.search.coarse import sync_centroids
from blocks.search.coordinator import parse_named_shards
from blocks.search.replica_link import ReplicaLink
from blocks.search.rows import EXPORT_ROWS_MAX
from blocks.search.wire import decode_batch, encode_batch

__all__ = ["CALL_TIMEOUT_S_DEFAULT", "RebalanceReport", "Step", "rebalance", "transfers"]

CALL_TIMEOUT_S_DEFAULT = 60.0
PAGE_ROWS_DEFAULT = 1_024


@dataclass(frozen=True, slots=True)
class Step:
    """What a run just did, for progress and tests: ``phase`` is ``copied`` or ``deleted``."""

    kind: str  # "vectors" or "documents"
    source: str
    target: str
    phase: str
    count: int


@dataclass(slots=True)
class RebalanceReport:
    """Ids moved per ``(source, target)``; ``pages`` examined in all."""

    vectors: dict[tuple[str, str], int] = field(default_factory=dict)
    documents: dict[tuple[str, str], int] = field(default_factory=dict)
    pages: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "vectors": {f"{s}->{t}": n for (s, t), n in sorted(self.vectors.items())},
            "documents": {f"{s}->{t}": n for (s, t), n in sorted(self.documents.items())},
            "pages": self.pages,
        }


def transfers(old_names: Sequence[str], new_names: Sequence[str]) -> list[tuple[str, str]]:
    """Every ``(source, target)`` a run examines: old shards to the other new shards."""
    return [(source, target) for source in old_names for target in new_names if target != source]


class _Shard:
    def __init__(self, name: str, links: list[ReplicaLink], timeout_s: float) -> None:
        self.name, self.links, self.timeout_s = name, links, timeout_s

    def read(self, method: str, request: Any) -> Any:
        """``method`` on the first replica that answers."""
        last: BlocksError | None = None
        for link in self.links:
            try:
                return link.call(method, request, self.timeout_s)
            except BlocksError as error:
                if not error.retryable:
                    raise
                last = error
        raise Unavailable(f"shard {self.name}: no replica answered ({last})")

    def each(self, method: str, request: Any) -> list[Any]:
        """``method`` on every replica; the first failure is raised."""
        return [link.call(method, request, self.timeout_s) for link in self.links]


def rebalance(
    old_spec: str,
    new_spec: str,
    *,
    token: str | None = None,
    page_rows: int = PAGE_ROWS_DEFAULT,
    timeout_s: float = CALL_TIMEOUT_S_DEFAULT,
    on_step: Callable[[Step], None] | None = None,
) -> RebalanceReport:
    """Move what the ring over ``new_spec``'s names places elsewhere (module docstring).

    Specs are ``--remote-shards`` strings. ``on_step`` is called after every page's copy
    and delete. Raises the first failure; running again finishes the job."""
    if not 1 <= page_rows <= EXPORT_ROWS_MAX:
        raise InvalidArgument(f"page_rows must be in 1..{EXPORT_ROWS_MAX}")
    old, new = parse_named_shards(old_spec), parse_named_shards(new_spec)
    new_names = [name for name, _ in new]
    links: list[ReplicaLink] = []

    def shard(name: str, addresses: list[str]) -> _Shard:
        group = [ReplicaLink(address, token=token) for address in addresses]
        links.extend(group)
        return _Shard(name, group, timeout_s)

    try:
        sources = {name: shard(name, addresses) for name, addresses in old}
        targets = {name: shard(name, addresses) for name, addresses in new}
        info = next(iter(targets.values())).read("Info", search_pb2.InfoRequest())
        dim = int(info.dim)
        if info.nlist:  # shared IVF: a new shard files vectors under the same centroids
            sync_centroids(links, Metric.parse(info.metric), timeout_s)
        report = RebalanceReport()
        for source, target in transfers(list(sources), new_names):
            mover = _Mover(sources[source], targets[target], new_names, page_rows, report)
            mover.vectors(dim, on_step)
            mover.documents(on_step)
        return report
    finally:
        for link in links:
            link.close()


class _Mover:
    """One ``(source, target)`` transfer, page by page."""

    def __init__(
        self,
        source: _Shard,
        target: _Shard,
        ring_names: list[str],
        page_rows: int,
        report: RebalanceReport,
    ) -> None:
        self.source, self.target = source, target
        self.ring_names, self.page_rows, self.report = ring_names, page_rows, report
        self.key = (source.name, target.name)

    def _page(self, cursor: Any, **after: Any) -> Any:
        return search_pb2.ExportRequest(
            ring_names=self.ring_names,
            owner=self.target.name,
            has_after=cursor is not None,
            limit=self.page_rows,
            **after,
        )

    def vectors(self, dim: int, on_step: Callable[[Step], None] | None) -> None:
        cursor: int | None = None
        while True:
            after = {} if cursor is None else {"after_id": cursor}
            page = self.source.read("ExportVectors", self._page(cursor, **after))
            self.report.pages += 1
            ids = list(page.ids)
            if ids:
                attributes = list(page.attributes)  # one per id, or none at all
                self._move_vectors(ids, decode_batch(page.vectors, dim), attributes, on_step)
            if page.done:
                return
            cursor = int(page.next_after_id)

    def _move_vectors(
        self,
        ids: list[int],
        data: Any,
        attributes: list[Any],
        on_step: Callable[[Step], None] | None,
    ) -> None:
        by_ids = search_pb2.ExportRequest(by_ids=True, ids=ids)
        for link in self.target.links:  # copy what each replica lacks
            held = set(link.call("ExportVectors", by_ids, self.target.timeout_s).ids)
            lacking = [at for at, vector_id in enumerate(ids) if vector_id not in held]
            if lacking:
                request = search_pb2.AddVectorsRequest(
                    ids=[ids[at] for at in lacking],
                    vectors=encode_batch(data[lacking]),
                    attributes=[attributes[at] for at in lacking] if attributes else [],
                )
                link.call("AddVectors", request, self.target.timeout_s)
        for reply in self.target.each("ExportVectors", by_ids):  # verify
            if set(reply.ids) != set(ids):
                raise Unavailable(f"shard {self.target.name} did not keep the copied vectors")
        still = set(self.source.read("ExportVectors", by_ids).ids)
        gone = [vector_id for vector_id in ids if vector_id not in still]
        if gone:  # removed by a client while in flight: not to be resurrected on the target
            self.target.each("RemoveVectors", search_pb2.RemoveVectorsRequest(ids=gone))
        self._step(on_step, "vectors", "copied", len(ids))
        kept = [vector_id for vector_id in ids if vector_id in still]
        self.source.each("RemoveVectors", search_pb2.RemoveVectorsRequest(ids=kept))
        self.report.vectors[self.key] = self.report.vectors.get(self.key, 0) + len(kept)
        self._step(on_step, "vectors", "deleted", len(kept))

    def documents(self, on_step: Callable[[Step], None] | None) -> None:
        cursor: str | None = None
        while True:
            after = {} if cursor is None else {"after_doc": cursor}
            page = self.source.read("ExportDocuments", self._page(cursor, **after))
            self.report.pages += 1
            documents = [(d.id, d.text) for d in page.documents]
            if documents:
                self._move_documents(documents, on_step)
            if page.done:
                return
            cursor = str(page.next_after_doc)

    def _move_documents(
        self, documents: list[tuple[str, str]], on_step: Callable[[Step], None] | None
    ) -> None:
        ids = [doc_id for doc_id, _ in documents]
        by_ids = search_pb2.ExportRequest(by_ids=True, doc_ids=ids)
        for link in self.target.links:
            reply = link.call("ExportDocuments", by_ids, self.target.timeout_s)
            held = {d.id for d in reply.documents}
            lacking = [search_pb2.Document(id=d, text=t) for d, t in documents if d not in held]
            if lacking:
                request = search_pb2.IndexDocumentsRequest(documents=lacking)
                link.call("IndexDocuments", request, self.target.timeout_s)
        for reply in self.target.each("ExportDocuments", by_ids):
            if {d.id for d in reply.documents} != set(ids):
                raise Unavailable(f"shard {self.target.name} did not keep the copied documents")
        still = {d.id for d in self.source.read("ExportDocuments", by_ids).documents}
        gone = [doc_id for doc_id in ids if doc_id not in still]
        if gone:
            self.target.each("DeleteDocuments", search_pb2.DeleteDocumentsRequest(ids=gone))
        self._step(on_step, "documents", "copied", len(ids))
        kept = [doc_id for doc_id in ids if doc_id in still]
        self.source.each("DeleteDocuments", search_pb2.DeleteDocumentsRequest(ids=kept))
        self.report.documents[self.key] = self.report.documents.get(self.key, 0) + len(kept)
        self._step(on_step, "documents", "deleted", len(kept))

    def _step(
        self, on_step: Callable[[Step], None] | None, kind: str, phase: str, count: int
    ) -> None:
        if on_step is not None:
            on_step(Step(kind, self.source.name, self.target.name, phase, count))
