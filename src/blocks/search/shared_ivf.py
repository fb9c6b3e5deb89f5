"""``SharedIVFIndex``: an IVF-Flat shard whose centroids come from outside and whose probes may too.

Theory of operation. A faiss ``IndexIVFFlat`` holding caller ids as faiss ids (an IVF stores
them natively and deletes natively, so no label table is needed). Its centroids are either
trained here (``train``: the k-means of a single ``IVF<nlist>,Flat``) or *given*
(``set_centroids``): a coordinator trains them once for the whole collection and pushes them
to every shard (``blocks.search.coarse``). Searches come in two forms:

* ``search`` (the ``VectorIndex`` one): coarse search here, then the scan, as any IVF;
* ``search_preassigned``: the caller already chose each query's lists (the coordinator's one
  coarse search for all shards); only the scan of those lists of this shard's data runs.

Each call passes its own ``SearchParametersIVF`` (``nprobe``, the filter's selector) straight
to faiss's C++ ``search_preassigned``: faiss's Python wrapper of it refuses parameters and
reads the index's shared ``nprobe``, which concurrent searches would race on.

The centroids are fixed once set: ``set_centroids`` with different ones, or ``train`` after
them, raises ``FailedPrecondition``, as retraining would file vectors under lists that the
others do not share. Saved and loaded whole (faiss's serialisation holds the centroids and the
lists), so a restarted shard needs neither a retraining nor a rebuild.
"""

from __future__ import annotations

import threading
from typing import Any

import faiss
import numpy as np

from blocks.core.errors import Corruption, FailedPrecondition, InvalidArgument
from blocks.search.api import DimensionAndMetric, Filter, FloatArray, IdArray, Metric, SearchResult
from blocks.search.coarse import SHARED_IVF_KIND as KIND
from blocks.search.coarse import faiss_metric, flat_quantizer, read_centroids, train_centroids
from blocks.search.vectors import DIM_MAX, allowed_mask, as_ids, as_vectors, atomic_write, check_k

__all__ = ["NPROBE_DEFAULT", "SharedIVFIndex"]

NPROBE_DEFAULT = 16
_FAISS: Any = faiss  # faiss's bundled type hints miss the SearchParameters constructors


class SharedIVFIndex(DimensionAndMetric):
    """An IVF-Flat index over caller ids with settable centroids; see the module docstring.

    Searches may run concurrently with each other; mutations are serialised by the caller
    (the ``VectorIndex`` contract) and take a lock against searches."""

    def __init__(
        self,
        dim: int,
        nlist: int,
        metric: str | Metric = Metric.L2,
        *,
        nprobe: int = NPROBE_DEFAULT,
    ) -> None:
        if not isinstance(dim, int) or not 1 <= dim <= DIM_MAX:
            raise InvalidArgument(f"dim must be in 1..{DIM_MAX}, got {dim!r}")
        if not isinstance(nlist, int) or nlist < 1 or nprobe < 1:
            raise InvalidArgument("nlist and nprobe must be positive integers")
        self._dim, self._nlist, self._nprobe = dim, nlist, nprobe
        self._metric = Metric.parse(metric)
        self._lock = threading.Lock()
        self._index: Any = None  # an IndexIVFFlat once the centroids are known
        self._ids: set[int] = set()

    @property
    def nlist(self) -> int:
        return self._nlist

    @property
    def nprobe(self) -> int:
        return self._nprobe

    @property
    def is_trained(self) -> bool:
        return self._index is not None

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> IdArray:
        """The live ids, ascending (a copy)."""
        return np.sort(np.fromiter(self._ids, dtype=np.int64, count=len(self._ids)))

    def centroids(self) -> FloatArray | None:
        """A copy of the ``(nlist, dim)`` centroids, ``None`` before they are set."""
        if self._index is None:
            return None
        return read_centroids(faiss.downcast_index(self._index.quantizer))

    def set_centroids(self, centroids: Any) -> None:
        """Use these centroids (raw values: not normalised again for cosine). Idempotent for
        the same centroids; ``FailedPrecondition`` for different ones once set."""
        data = np.ascontiguousarray(centroids, dtype=np.float32)
        if data.shape != (self._nlist, self._dim) or not np.isfinite(data).all():
            raise InvalidArgument(f"centroids must be finite ({self._nlist}, {self._dim})")
        current = self.centroids()
        if current is not None:
            if not np.array_equal(current, data):
                raise FailedPrecondition("this shard's IVF centroids are already set, and differ")
            return
        quantizer = flat_quantizer(data, self._metric)
        index = faiss.IndexIVFFlat(quantizer, self._dim, self._nlist, faiss_metric(self._metric))
        index.is_trained = True
        with self._lock:
            self._index = index

    def train(self, vectors: Any) -> None:
        """Train the centroids here (a single IVF's k-means); a no-op once they are set."""
        data = as_vectors(vectors, self._dim, metric=self._metric)
        if self._index is not None:
            return
        self.set_centroids(train_centroids(data, self._nlist, self._metric))

    def _trained(self) -> Any:
        if self._index is None:
            raise FailedPrecondition("a shared IVF needs its centroids (train) before add")
        return self._index

    def add(self, ids: Any, vectors: Any) -> None:
        data = as_vectors(vectors, self._dim, metric=self._metric)
        ids_np = as_ids(ids, expected=data.shape[0])
        present = [item for item in ids_np.tolist() if item in self._ids]
        if present:
            raise InvalidArgument(f"ids already present: {present[:5]}")
        index = self._trained()
        if data.shape[0] == 0:
            return
        with self._lock:
            index.add_with_ids(data, ids_np)
            self._ids.update(ids_np.tolist())

    def remove(self, ids: Any) -> int:
        ids_np = as_ids(ids)
        gone = [item for item in ids_np.tolist() if item in self._ids]
        if not gone or self._index is None:
            return 0
        with self._lock:
            self._index.remove_ids(np.array(gone, dtype=np.int64))
            self._ids.difference_update(gone)
        return len(gone)

    def _selector(self, filter: Filter | None) -> Any:
        if filter is None:
            return None
        if callable(filter):
            candidates = np.fromiter(self._ids, dtype=np.int64, count=len(self._ids))
        else:
            candidates = np.asarray(filter, dtype=np.int64).ravel()
        return faiss.IDSelectorBatch(candidates[allowed_mask(filter, candidates)])

    def search(
        self,
        queries: Any,
        k: int,
        filter: Filter | None = None,
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> SearchResult:
        """As ``VectorIndex.search``: this index's own coarse search, then the scan
        (``ef_search`` is for HNSW indexes and ignored here)."""
        k = check_k(k)
        data = as_vectors(queries, self._dim, metric=self._metric)
        probes = min(self._nprobe if nprobe is None else int(nprobe), self._nlist)
        if probes < 1:
            raise InvalidArgument(f"nprobe must be positive, got {nprobe}")
        index = self._index
        if index is None or not self._ids:
            return _empty(data.shape[0], k, self._metric)
        _, lists = index.quantizer.search(data, probes)
        return self._scan(index, data, k, lists, filter)

    def search_preassigned(
        self, queries: Any, k: int, lists: Any, filter: Filter | None = None
    ) -> SearchResult:
        """Scan only ``lists`` (``(rows, probes)`` list numbers per query, from a shared
        coarse search) of this shard's data; no coarse search here."""
        k = check_k(k)
        data = as_vectors(queries, self._dim, metric=self._metric)
        probe_lists = np.ascontiguousarray(lists, dtype=np.int64)
        if probe_lists.ndim != 2 or probe_lists.shape[0] != data.shape[0]:
            raise InvalidArgument(f"probe lists of shape {probe_lists.shape} for {data.shape[0]}")
        if probe_lists.size and (probe_lists.min() < 0 or probe_lists.max() >= self._nlist):
            raise InvalidArgument(f"a probe list is outside 0..{self._nlist - 1}")
        index = self._index
        if index is None or not self._ids or probe_lists.shape[1] == 0:
            return _empty(data.shape[0], k, self._metric)
        return self._scan(index, data, k, probe_lists, filter)

    def _scan(self, index: Any, data: FloatArray, k: int, lists: Any, filter: Any) -> SearchResult:
        rows, probes = lists.shape
        params = _FAISS.SearchParametersIVF(nprobe=int(probes))
        selector = self._selector(filter)  # kept alive here while faiss reads it
        if selector is not None:
            params.sel = selector
        distances = np.empty((rows, k), dtype=np.float32)
        ids = np.empty((rows, k), dtype=np.int64)
        coarse = np.zeros((rows, probes), dtype=np.float32)  # unused by a Flat scan
        index.search_preassigned_c(
            rows,
            faiss.swig_ptr(data),
            k,
            faiss.swig_ptr(lists),
            faiss.swig_ptr(coarse),
            faiss.swig_ptr(distances),
            faiss.swig_ptr(ids),
            False,
            params,
        )
        distances[ids < 0] = self._metric.worst
        return SearchResult(ids=ids, distances=distances)

    def save(self, path: str) -> None:
        blob = None if self._index is None else faiss.serialize_index(self._index)

        def write(handle: Any) -> None:
            np.savez(
                handle,
                kind=np.array(KIND),
                metric=np.array(self._metric.value),
                shape=np.array([self._dim, self._nlist], dtype=np.int64),
                index=np.asarray(blob if blob is not None else [], dtype=np.uint8),
                trained=np.array([blob is not None]),
            )

        atomic_write(path, write)

    def load(self, path: str) -> None:
        try:
            with np.load(path, allow_pickle=False) as archive:
                fields = {name: archive[name] for name in archive.files}
            kind, metric = str(fields["kind"]), str(fields["metric"])
            dim, nlist = (int(v) for v in fields["shape"])
            index: Any = None
            if bool(fields["trained"][0]):
                index = faiss.deserialize_index(np.asarray(fields["index"], dtype=np.uint8))
        except FileNotFoundError:
            raise
        except Exception as error:
            raise Corruption(f"cannot read index file {path}: {type(error).__name__}") from None
        if kind != KIND or (dim, nlist) != (self._dim, self._nlist) or metric != self._metric.value:
            raise InvalidArgument(
                f"{path} holds a {kind} {metric} index of dim {dim}, {nlist} lists"
            )
        ids: set[int] = set()
        if index is not None:
            invlists = index.invlists
            for number in range(nlist):
                size = invlists.list_size(number)
                if size:
                    listed = faiss.rev_swig_ptr(invlists.get_ids(number), size)
                    ids.update(np.array(listed, dtype=np.int64).tolist())
        with self._lock:
            self._index, self._ids = index, ids


def _empty(rows: int, k: int, metric: Metric) -> SearchResult:
    ids: IdArray = np.full((rows, k), -1, dtype=np.int64)
    return SearchResult(ids=ids, distances=np.full((rows, k), metric.worst, dtype=np.float32))
