"""``FaissIndex``: FAISS indexes (Flat, IVF-Flat, IVF-PQ, HNSW, ...) behind ``VectorIndex``.

Theory of operation: the FAISS index is built from a factory string (``"Flat"``,
``"IVF1024,Flat"``, ``"IVF1024,PQ16"``, ``"HNSW32"``, ...). Caller ids never reach FAISS
directly. Each added vector gets the next *label* (a dense counter); two arrays translate
label to caller id and a dict translates back. That indirection is what makes removal work
the same way everywhere:

* IVF indexes and Flat (wrapped in ``IndexIDMap2``) delete natively with ``remove_ids``;
* HNSW graphs cannot delete, so removed labels become *tombstones* that every search excludes
  through an ``IDSelector``. Re-adding a removed id gives it a fresh label. When tombstones
  pass ``tombstone_fraction_max`` of the graph it is rebuilt from its stored vectors.

Cosine is inner product over normalised vectors. Stored vectors are normalised in float64
(``as_vectors``). A search's queries are checked through their float32 norms (faiss's
SIMD kernel; finite exactly when the entries are, unless a square overflowed), with
``as_vectors``'s float64 path where float32 squares could overflow or underflow. Cosine
queries are then either divided by their norms on a copy of their own, or, on indexes whose
scores are linear in the query (``_scores_linear_in_query``: Flat, IVF-Flat over a flat or
HNSW quantiser, HNSW-Flat; no pre-transform), searched as they are, with the ``k`` scores of
each row divided by its norm afterwards: scaling a query scales every score it is ranked by,
so the ranking is the normalised query's, up to float32 rounding of near-ties. Queries of
other metrics go to faiss without a copy. While the caller's ids are the labels themselves
(``0..n-1`` added in order, nothing removed), faiss's labels are returned as the ids instead
of being translated. IVF and PQ need ``train`` before the first
``add``; an IVF over a flat quantizer starts its k-means from k-means++ seeds
(``coarse.train_quantizer``), not faiss's uniform draw; per-search knobs (``nprobe`` for IVF, ``ef_search`` for HNSW) travel in FAISS
``SearchParameters`` together with the filter's ``IDSelectorBitmap``, so concurrent searches
with different settings do not interfere. With ``device="cuda"`` and a FAISS build that has GPU
support the index is copied to the GPU; otherwise it stays on the CPU.

With ``query_threads`` above 1 (default 1: one faiss call, whose OpenMP loop spreads the
queries; ``None``: as many as faiss's OpenMP would use), batches on IVF and HNSW indexes are
split into chunks of queries searched by a small pool of our own threads, each running faiss
single-threaded. Each query's search is independent, so the answers are the same; what
changes is the scheduling: chunks are taken from a queue as threads free up, where an OpenMP
loop waits at its barrier for the slowest thread, which on cores shared with other processes
is the one that lost its core. On the loaded development machine the A/B was mixed (x0.42 to
x1.66 across runs, docs/search.md), so it is opt-in. Flat indexes always keep faiss's own call
(their work is a BLAS product over the whole batch).

Results are approximate for IVF/PQ/HNSW; ties carry no ordering promise.
"""

from __future__ import annotations

import itertools
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import faiss
import numpy as np

from blocks.core.errors import Corruption, FailedPrecondition, InvalidArgument
from blocks.search.api import DimensionAndMetric, Filter, IdArray, Metric, SearchResult
from blocks.search.coarse import train_quantizer, trains_own_quantizer
from blocks.search.vectors import (
    BATCH_ROWS_MAX,
    DIM_MAX,
    allowed_mask,
    as_float32_rows,
    as_ids,
    as_vectors,
    atomic_write,
    check_k,
)

__all__ = ["FaissIndex", "faiss_has_gpu"]

_NO_LABEL = -1
CHUNK_ROWS_MIN = 16
"""Fewest queries in a chunk of a pooled search: below this a thread hand-off costs more
than the queries it carries."""
CHUNKS_PER_THREAD = 4
IVF_PARAMETERS_CACHED_MAX = 64
"""Most distinct ``nprobe`` values whose shared ``SearchParametersIVF`` an index keeps."""
NORM_MIN = 1e-10
"""A query row whose float32 norm is below this takes the float64 path: its entries' squares
may have underflowed (each lost square is below 1.2e-38, so at most DIM_MAX x 1.2e-38 = 8e-34
is lost, under 1e-13 of this bound squared)."""
NORM_MAX = 1e15
"""A query row whose float32 norm is above this takes the float64 path (its squared norm,
1e30, is far below float32's 3.4e38, where a square overflows)."""
_FAISS: Any = faiss  # faiss's bundled hints miss SearchParameters(...) and fvec_norms_L2sqr


def _as_any(value: Any) -> Any:
    return value


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _single_threaded() -> None:
    faiss.omp_set_num_threads(1)  # this worker thread's OpenMP setting only


def _query_pool(threads: int) -> ThreadPoolExecutor:
    """The process's pool of ``threads`` workers, each running faiss on one thread."""
    with _POOLS_LOCK:
        pool = _POOLS.get(threads)
        if pool is None:
            pool = ThreadPoolExecutor(
                threads, thread_name_prefix="faiss-query", initializer=_single_threaded
            )
            _POOLS[threads] = pool
        return pool


def faiss_has_gpu() -> bool:
    """True when the installed FAISS was built with GPU support and sees a GPU."""
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    return (
        hasattr(faiss, "StandardGpuResources") and get_num_gpus is not None and get_num_gpus() > 0
    )


class FaissIndex(DimensionAndMetric):
    """A FAISS index over caller ids; see the module docstring."""

    def __init__(
        self,
        dim: int,
        spec: str = "Flat",
        metric: str | Metric = Metric.L2,
        *,
        nprobe: int = 16,
        ef_search: int = 64,
        device: str = "cpu",
        tombstone_fraction_max: float = 0.25,
        query_threads: int | None = 1,
    ) -> None:
        if not isinstance(dim, int) or not 1 <= dim <= DIM_MAX:
            raise InvalidArgument(f"dim must be in 1..{DIM_MAX}, got {dim!r}")
        if device not in ("cpu", "cuda", "auto"):
            raise InvalidArgument(f"device must be cpu, cuda or auto, got {device!r}")
        if device == "cuda" and not faiss_has_gpu():
            raise InvalidArgument("device 'cuda' requested but this faiss has no GPU support")
        self._dim = dim
        self._spec = spec
        self._metric = Metric.parse(metric)
        self._nprobe = _positive("nprobe", nprobe)
        self._ef_search = _positive("ef_search", ef_search)
        self._on_gpu = device == "cuda" or (device == "auto" and faiss_has_gpu())
        self._tombstone_fraction_max = tombstone_fraction_max
        # 1: faiss's own call, whose OpenMP loop then decides; None: as many pool threads as
        # faiss's OpenMP would use (OMP_NUM_THREADS, else every core).
        self._query_threads = (
            faiss.omp_get_max_threads()
            if query_threads is None
            else _positive("query_threads", query_threads)
        )
        self._lock = threading.Lock()
        self._index = self._build()
        self._reset_labels()

    def _build(self) -> Any:
        faiss_metric = faiss.METRIC_L2 if self._metric is Metric.L2 else faiss.METRIC_INNER_PRODUCT
        try:
            inner = faiss.index_factory(self._dim, self._spec, faiss_metric)
        except RuntimeError as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise InvalidArgument(f"bad faiss spec {self._spec!r}: {first_line}") from None
        self._ivf = _try_extract_ivf(inner)
        self._hnsw = getattr(inner, "hnsw", None)
        index = inner if self._ivf is not None else faiss.IndexIDMap2(inner)
        if self._on_gpu:  # pragma: no cover - needs a GPU build of faiss
            self._gpu_resources = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, index)
        self._inner = inner
        self._scale_after = self._metric is Metric.COSINE and _scores_linear_in_query(inner)
        self._ivf_is_index = isinstance(index, faiss.IndexIVF)
        self._ivf_parameters: dict[int, Any] = {}
        return index

    def _reset_labels(self) -> None:
        self._next_label = 0
        self._set_label_ids(np.empty((0,), dtype=np.int64))
        self._label_of: dict[int, int] = {}
        self._tombstones: set[int] = set()

    def _set_label_ids(self, label_ids: IdArray) -> None:
        """``label -> caller id or -1``, kept as a view of a lookup one longer whose last entry
        is -1, so a search maps faiss's labels (-1 for an empty slot) with one ``take``."""
        lookup = np.empty((label_ids.shape[0] + 1,), dtype=np.int64)
        lookup[:-1] = label_ids
        lookup[-1] = _NO_LABEL
        self._lookup: IdArray = lookup
        self._label_ids: IdArray = lookup[:-1]
        # Invariant: True only while label_ids[label] == label for every label (nothing
        # removed); ``remove`` clears it, since a removed label maps to -1.
        self._ids_are_labels = bool(
            np.array_equal(label_ids, np.arange(label_ids.shape[0], dtype=np.int64))
        )

    @property
    def spec(self) -> str:
        return self._spec

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    @property
    def nprobe(self) -> int:
        """The default ``nprobe`` of IVF searches."""
        return self._nprobe

    @property
    def ef_search(self) -> int:
        """The default ``efSearch`` of HNSW searches."""
        return self._ef_search

    @property
    def nlist(self) -> int | None:
        """The number of inverted lists of an IVF index, ``None`` for others."""
        return None if self._ivf is None else int(self._ivf.nlist)

    @property
    def is_hnsw(self) -> bool:
        return self._hnsw is not None

    def ids(self) -> IdArray:
        """The live ids (a copy, in label order)."""
        with self._lock:
            return self._label_ids[self._label_ids >= 0].copy()

    def __len__(self) -> int:
        return len(self._label_of)

    def train(self, vectors: Any) -> None:
        """Train IVF centroids / PQ codebooks; a no-op for indexes that need none. An IVF over
        a flat quantizer (``"IVF<nlist>,Flat"``, ``"IVF<nlist>,PQ..."``, on the CPU) runs
        faiss's k-means from k-means++ seeds (``coarse.train_quantizer``), the rest faiss's
        own training."""
        data = as_vectors(vectors, self._dim, metric=self._metric)
        if self.is_trained:
            return
        if data.shape[0] == 0:
            raise InvalidArgument("training needs at least one vector")
        with self._lock:
            if not self._on_gpu and trains_own_quantizer(self._index):
                train_quantizer(self._index, data)  # k-means from k-means++ seeds
            self._index.train(data)

    def add(self, ids: Any, vectors: Any) -> None:
        data = as_vectors(vectors, self._dim, metric=self._metric)
        ids_np = as_ids(ids, expected=data.shape[0])
        present = [int(i) for i in ids_np if int(i) in self._label_of]
        if present:
            raise InvalidArgument(f"ids already present: {present[:5]}")
        if not self.is_trained:
            raise FailedPrecondition(f"faiss index {self._spec!r} must be trained before add")
        if data.shape[0] == 0:
            return
        with self._lock:
            labels = np.arange(self._next_label, self._next_label + data.shape[0], dtype=np.int64)
            self._index.add_with_ids(data, labels)
            self._next_label += data.shape[0]
            self._set_label_ids(np.concatenate([self._label_ids, ids_np]))
            for label, item in zip(labels.tolist(), ids_np.tolist(), strict=True):
                self._label_of[item] = label

    def remove(self, ids: Any) -> int:
        ids_np = as_ids(ids)
        with self._lock:
            labels = [
                self._label_of.pop(item) for item in ids_np.tolist() if item in self._label_of
            ]
            if not labels:
                return 0
            label_array = np.array(labels, dtype=np.int64)
            self._label_ids[label_array] = _NO_LABEL
            self._ids_are_labels = False
            if self._hnsw is None:
                self._index.remove_ids(label_array)
            else:
                self._tombstones.update(labels)
                self._maybe_compact()
        return len(labels)

    def _maybe_compact(self) -> None:
        """Rebuild an HNSW graph once tombstones exceed their allowed fraction."""
        total = int(self._index.ntotal)
        if not self._tombstones or len(self._tombstones) <= self._tombstone_fraction_max * total:
            return
        cpu_index = faiss.index_gpu_to_cpu(self._index) if self._on_gpu else self._index
        live_labels = np.array(sorted(self._label_of.values()), dtype=np.int64)
        vectors = np.empty((len(live_labels), self._dim), dtype=np.float32)
        for row, label in enumerate(live_labels.tolist()):
            vectors[row] = cpu_index.reconstruct(label)
        live_ids = self._label_ids[live_labels]
        self._index = self._build()
        self._reset_labels()
        if len(live_ids):
            labels = np.arange(len(live_ids), dtype=np.int64)
            self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), labels)
            self._next_label = len(live_ids)
            self._set_label_ids(live_ids)
            self._label_of = dict(zip(live_ids.tolist(), labels.tolist(), strict=True))

    def _selector(self, filter: Filter | None) -> Any:
        """The filter's allow-list, else the tombstones' exclusion, else ``None``."""
        if filter is not None:
            mask = np.zeros(self._label_ids.shape, dtype=np.bool_)
            listed = None if callable(filter) else np.asarray(filter)
            if (
                self._ids_are_labels  # the ids index the mask: no search of the labels
                and listed is not None
                and listed.ndim == 1
                and listed.dtype.kind in "iu"
            ):
                mask[listed[(listed >= 0) & (listed < len(mask))]] = True
            else:
                live = self._label_ids >= 0
                mask[live] = allowed_mask(filter, self._label_ids[live])
            # A bitmap over the labels: built in O(labels / 8), no hash set of the allowed.
            bits = np.packbits(mask, bitorder="little")
            selector: Any = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
            selector.bits = bits  # faiss reads this buffer: it lives as long as the selector
            return selector
        if self._tombstones:
            dead = np.fromiter(self._tombstones, dtype=np.int64, count=len(self._tombstones))
            return faiss.IDSelectorNot(faiss.IDSelectorBatch(dead))
        return None

    def _parameters(self, selector: Any, nprobe: int, ef_search: int) -> Any:
        """A new ``SearchParameters``: one per faiss call, since ``IndexIDMap2`` swaps the
        selector of the object it is given while it searches; except that an IVF index
        searched directly (no ``IndexIDMap2``, no pre-transform) with no selector only reads
        its ``SearchParametersIVF``, so those are made once per ``nprobe`` and shared."""
        params: Any
        if selector is None and self._ivf_is_index:
            params = self._ivf_parameters.get(nprobe)
            if params is None:
                if len(self._ivf_parameters) >= IVF_PARAMETERS_CACHED_MAX:
                    self._ivf_parameters.clear()
                params = _FAISS.SearchParametersIVF(nprobe=nprobe)
                self._ivf_parameters[nprobe] = params
            return params
        if self._ivf is not None:
            params = _FAISS.SearchParametersIVF(nprobe=nprobe)
        elif self._hnsw is not None:
            params = _FAISS.SearchParametersHNSW(efSearch=ef_search)
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
        return params

    def search(
        self,
        queries: Any,
        k: int,
        filter: Filter | None = None,
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> SearchResult:
        """As ``VectorIndex.search``, with optional per-call ``nprobe`` / ``ef_search``."""
        k = check_k(k)
        data, norms = self._checked_queries(queries)
        probes = ef = 0  # each checked only where the index uses it
        if self._ivf is not None:
            probes = _positive("nprobe", self._nprobe if nprobe is None else nprobe)
        elif self._hnsw is not None:
            # HNSW cannot return more than efSearch results.
            ef = max(_positive("ef_search", self._ef_search if ef_search is None else ef_search), k)
        selector = self._selector(filter)  # kept alive here while faiss reads it
        distances, labels = self._faiss_search(data, k, selector, probes, ef)
        # faiss's own output arrays (int64 and float32) are returned, not copies. Label -1 (an
        # empty slot) takes the lookup's last entry, -1; a removed label maps to -1.
        ids: IdArray = labels if self._ids_are_labels else self._lookup.take(labels)
        if norms is not None:  # cosine of an unnormalised query: its scores over its norm
            np.divide(distances, norms[:, None], out=distances)
        # Few numpy calls on this path: each costs tens of microseconds in the caches a faiss
        # scan leaves behind (docs/search.md), so one reduction tests for padding.
        if ids.size and np.minimum.reduce(ids, axis=None) < 0:
            distances[ids < 0] = self._metric.worst
        return SearchResult(ids=ids, distances=distances)

    def _checked_queries(self, queries: Any) -> tuple[Any, Any]:
        """``(rows, norms)``: ``queries`` as finite float32 rows and ``None``, except for
        cosine, where either the rows are unit rows (``norms`` None) or, on an index whose
        scores are linear in the query, the rows as given with their float32 norms, by which
        the caller divides the scores. Raises ``InvalidArgument`` as ``as_vectors`` does. A
        row's float32 norm is finite exactly when its entries are, unless a square
        overflowed, so n norms stand for the n x dim check; a batch with any row outside
        ``NORM_MIN..NORM_MAX`` (or not finite) takes ``as_vectors``'s float64 path, which
        raises for NaN, infinities and zero rows. The caller's array is never written."""
        rows = queries
        if not (  # the common case, with no numpy call: float32 rows of our dimension
            type(rows) is np.ndarray
            and rows.dtype == np.float32
            and rows.ndim == 2
            and rows.shape[1] == self._dim
            and rows.flags.c_contiguous
            and 0 < rows.shape[0] <= BATCH_ROWS_MAX
        ):
            rows = as_float32_rows(queries, self._dim)
            if not rows.shape[0]:
                return as_vectors(rows, self._dim, metric=self._metric), None
        count = rows.shape[0]
        norms = np.empty((count,), dtype=np.float32)
        # Row norms in float32: the square root of a float32 sum of float32 squares.
        _FAISS.fvec_norms_L2(faiss.swig_ptr(norms), faiss.swig_ptr(rows), self._dim, count)
        if self._metric is not Metric.COSINE:
            # The norms are >= 0, so their sum is finite only when each is (or it overflowed:
            # the float64 path then decides).
            if math.isfinite(np.add.reduce(norms)):
                return rows, None  # the caller's array when it was float32: faiss only reads it
            return as_vectors(rows, self._dim), None
        lowest, highest = np.minimum.reduce(norms), np.maximum.reduce(norms)
        if not (lowest >= NORM_MIN and highest <= NORM_MAX):  # NaN fails too
            return as_vectors(rows, self._dim, metric=self._metric), None
        if self._scale_after:
            return rows, norms
        return rows / norms[:, None], None  # a new array

    def _faiss_search(
        self, data: Any, k: int, selector: Any, nprobe: int, ef_search: int
    ) -> tuple[Any, Any]:
        """faiss's search, over chunks of queries in the pool for IVF and HNSW indexes (see
        the module docstring); one call for Flat, on a GPU, or for a small batch. Each call
        gets its ``SearchParameters`` from ``_parameters``."""
        if self._query_threads == 1 or self._on_gpu:
            answer: tuple[Any, Any] = self._index.search(
                data, k, params=self._parameters(selector, nprobe, ef_search)
            )
            return answer
        rows = data.shape[0]
        chunks = min(self._query_threads * CHUNKS_PER_THREAD, rows // CHUNK_ROWS_MIN)
        pooled = self._ivf is not None or self._hnsw is not None
        if not pooled or chunks < 2:
            answer = self._index.search(
                data, k, params=self._parameters(selector, nprobe, ef_search)
            )
            return answer
        parameters = partial(self._parameters, selector, nprobe, ef_search)
        distances = np.empty((rows, k), dtype=np.float32)
        labels = np.empty((rows, k), dtype=np.int64)
        index = self._index
        bounds = np.linspace(0, rows, chunks + 1).astype(np.int64).tolist()

        def chunk(first: int, stop: int) -> None:
            index.search(
                data[first:stop],
                k,
                params=parameters(),
                D=distances[first:stop],
                I=labels[first:stop],
            )

        pool = _query_pool(self._query_threads)
        for future in [pool.submit(chunk, a, b) for a, b in itertools.pairwise(bounds)]:
            future.result()
        return distances, labels

    def save(self, path: str) -> None:
        cpu_index = faiss.index_gpu_to_cpu(self._index) if self._on_gpu else self._index
        blob = faiss.serialize_index(cpu_index)
        tombstones = np.array(sorted(self._tombstones), dtype=np.int64)

        def write(handle: Any) -> None:
            np.savez(
                handle,
                kind=np.array("faiss"),
                spec=np.array(self._spec),
                metric=np.array(self._metric.value),
                dim=np.array([self._dim], dtype=np.int64),
                label_ids=self._label_ids,
                tombstones=tombstones,
                index=np.asarray(blob, dtype=np.uint8),
            )

        atomic_write(path, write)

    def load(self, path: str) -> None:
        try:
            with np.load(path, allow_pickle=False) as archive:
                fields = {name: archive[name] for name in archive.files}
            kind, spec = str(fields["kind"]), str(fields["spec"])
            metric, dim = str(fields["metric"]), int(fields["dim"][0])
            label_ids = np.asarray(fields["label_ids"], dtype=np.int64)
            tombstones = set(np.asarray(fields["tombstones"], dtype=np.int64).tolist())
            index = faiss.deserialize_index(np.asarray(fields["index"], dtype=np.uint8))
        except FileNotFoundError:
            raise
        except Exception as error:
            raise Corruption(f"cannot read index file {path}: {type(error).__name__}") from None
        if kind != "faiss" or spec != self._spec:
            raise InvalidArgument(f"{path} holds a {kind} index {spec!r}, not {self._spec!r}")
        if dim != self._dim or metric != self._metric.value:
            raise InvalidArgument(f"{path} holds dim={dim} metric={metric}, index differs")
        with self._lock:
            inner = index if self._ivf is not None else faiss.downcast_index(_as_any(index).index)
            self._ivf = _try_extract_ivf(inner)
            self._hnsw = getattr(inner, "hnsw", None)
            if self._on_gpu:  # pragma: no cover - needs a GPU build of faiss
                index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, index)
            self._index, self._inner = index, inner
            self._scale_after = self._metric is Metric.COSINE and _scores_linear_in_query(inner)
            self._ivf_is_index = isinstance(index, faiss.IndexIVF)
            self._ivf_parameters = {}
            self._set_label_ids(label_ids)
            self._next_label = int(label_ids.shape[0])
            live = np.flatnonzero(label_ids >= 0)
            self._label_of = dict(zip(label_ids[live].tolist(), live.tolist(), strict=True))
            self._tombstones = tombstones


_LINEAR_INDEXES = (faiss.IndexFlat, faiss.IndexHNSWFlat, faiss.IndexIVFFlat)
_LINEAR_QUANTIZERS = (faiss.IndexFlat, faiss.IndexHNSWFlat)


def _scores_linear_in_query(inner: Any) -> bool:
    """True when every score the index ranks by (and returns) is an inner product of the raw
    query with stored vectors or centroids, so ``s * q`` (``s > 0``) ranks as ``q`` does: a
    flat scan, an HNSW walk over flat storage, an IVF-Flat scan whose lists were chosen by a
    flat or HNSW inner-product quantiser. Pre-transforms (PCA subtracts a mean), quantised
    codes and anything else are left out: their queries are normalised first."""
    index = faiss.downcast_index(inner)
    if type(index) not in _LINEAR_INDEXES or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        return False
    if not isinstance(index, faiss.IndexIVFFlat):
        return True
    quantizer = faiss.downcast_index(index.quantizer)
    return (
        type(quantizer) in _LINEAR_QUANTIZERS
        and quantizer.metric_type == faiss.METRIC_INNER_PRODUCT
    )


def _try_extract_ivf(index: Any) -> Any:
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) < 1:
        raise InvalidArgument(f"{name} must be a positive integer, got {value!r}")
    return int(value)
