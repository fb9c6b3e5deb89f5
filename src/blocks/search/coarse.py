"""One coarse quantiser for a whole sharded collection: shared IVF centroids and probe lists.

Theory of operation. An IVF index finds a query's candidates in two steps: the *coarse*
search picks the ``nprobe`` centroids nearest the query, then the vectors filed under those
centroids' lists are scanned. When every shard trains its own IVF, the shards' lists differ,
each must probe a larger share of its lists to find its share of the true neighbours, and
each repeats the coarse search: at equal recall four shards scanned about twice the vectors
of one index (docs/search.md). With one set of centroids for the whole collection:

* the centroids are trained **once**, by whoever trains the collection: a ``Coordinator``
  runs the same k-means a single ``IVF<nlist>,Flat`` ``FaissIndex`` runs (``train_centroids``,
  ``train_quantizer``: faiss's k-means from k-means++ seeds) on the
  sample it is given and pushes the result to every replica of every shard (``SetCentroids``).
  Pushing, not having each shard train on the same sample, because k-means on several
  processes is not guaranteed bit-identical (OpenMP reductions differ with thread counts),
  and the coordinator needs the centroids itself to assign queries;
* each shard (``blocks.search.shared_ivf.SharedIVFIndex``) files its own vectors under those
  centroids, logs the centroids in its journal and keeps them in every snapshot, so the
  shards are where the centroids live: a restarted coordinator reads them back from the
  shards (``GetCentroids``) and refuses shards that disagree; a shard that has none (a new
  one) is given them before it takes vectors (``sync_centroids``);
* per query batch the coordinator runs the coarse search once (``CoarseQuantizer.assign``)
  and sends the queries with their probe lists; each shard scans only those lists of its
  own data (faiss ``search_preassigned``). The shards' lists together are exactly the
  single index's lists, so the merged answer equals a single ``IVF<nlist>,Flat`` over all
  vectors with those centroids at the same ``nprobe`` (ties aside), and the total scan is
  the single index's.

Probe lists travel as little-endian int32 bytes, row-major ``rows x probes``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt

from blocks.core.errors import BlocksError, FailedPrecondition, InvalidArgument
from blocks.search import search_pb2
from blocks.search.api import FloatArray, Metric

__all__ = [
    "BLAS_ROWS_MIN",
    "COARSE_THREADS_DEFAULT",
    "NLIST_MAX",
    "SEED_ROWS_PER_LIST",
    "SHARED_IVF_KIND",
    "CoarseQuantizer",
    "decode_probe_lists",
    "encode_probe_lists",
    "faiss_metric",
    "kmeans_plus_plus",
    "parse_nlist",
    "prefer_blas",
    "sync_centroids",
    "train_centroids",
    "train_quantizer",
    "trains_own_quantizer",
]

SHARED_IVF_KIND = "shared-ivf"
"""The node kind (``serve --kind``, ``Info.kind``) of a shard of a shared IVF."""
NLIST_MAX = 1 << 20
"""Most lists a shared IVF may have (the probe lists travel as int32)."""

ProbeLists = npt.NDArray[np.int64]
_SPEC = re.compile(r"^IVF(\d+)(,Flat)?$")


BLAS_ROWS_MIN = 64  # ``prefer_blas``: from this many query rows a coarse search uses BLAS
COARSE_THREADS_DEFAULT = 2  # a coordinator's coarse search: rows split over this many threads
SEED_ROWS_PER_LIST = 16
"""``train_quantizer`` draws its k-means++ seeds from at most this many sample rows a list (a
uniform subset): 200k x 128 at 1,776 lists trained in 11.8 s of CPU against 21.6 s from all
88,800 rows, same recall per nprobe within faiss's seed spread (docs/search.md)."""


def parse_nlist(spec: str) -> int:
    """``"IVF1776,Flat"`` or ``"IVF1776"`` -> 1776; ``InvalidArgument`` otherwise."""
    match = _SPEC.match(spec.strip())
    if match is None:
        raise InvalidArgument(f"a shared IVF takes a spec IVF<nlist>[,Flat], got {spec!r}")
    nlist = int(match.group(1))
    if not 1 <= nlist <= NLIST_MAX:
        raise InvalidArgument(f"nlist must be in 1..{NLIST_MAX}, got {nlist}")
    return nlist


def faiss_metric(metric: Metric) -> int:
    """faiss's metric constant (cosine is inner product over normalised vectors)."""
    import faiss  # here, not at import: a node of another kind need not load faiss

    return int(faiss.METRIC_L2 if metric is Metric.L2 else faiss.METRIC_INNER_PRODUCT)


def flat_quantizer(centroids: FloatArray, metric: Metric) -> Any:
    """A faiss flat index holding ``centroids`` (the coarse quantiser of an IVF)."""
    import faiss

    dim = int(centroids.shape[1])
    quantizer = faiss.IndexFlatL2(dim) if metric is Metric.L2 else faiss.IndexFlatIP(dim)
    quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
    return quantizer


def train_centroids(sample: FloatArray, nlist: int, metric: Metric) -> FloatArray:
    """The ``(nlist, dim)`` centroids a single ``IVF<nlist>,Flat`` ``FaissIndex`` trains on
    ``sample`` (``train_quantizer``: the same k-means, start, seed and iterations). ``sample``
    is already validated (and normalised for cosine). Raises ``InvalidArgument`` for fewer
    rows than lists."""
    if sample.shape[0] < nlist:
        raise InvalidArgument(f"training {nlist} lists needs at least {nlist} vectors")
    import faiss

    dim = int(sample.shape[1])
    quantizer = faiss.IndexFlatL2(dim) if metric is Metric.L2 else faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss_metric(metric))
    train_quantizer(ivf, np.ascontiguousarray(sample, dtype=np.float32))
    return read_centroids(quantizer)


def trains_own_quantizer(ivf: Any) -> bool:
    """True when ``train_quantizer`` can train ``ivf``'s lists: an untrained CPU ``IndexIVF``
    over an empty flat (L2 or inner-product) quantizer of the IVF's own metric."""
    import faiss

    if not isinstance(ivf, faiss.IndexIVF) or ivf.is_trained:
        return False
    quantizer = faiss.downcast_index(ivf.quantizer)
    return (
        type(quantizer) in (faiss.IndexFlat, faiss.IndexFlatL2, faiss.IndexFlatIP)
        and quantizer.ntotal == 0
        and quantizer.metric_type == ivf.metric_type
        and ivf.metric_type in (faiss.METRIC_L2, faiss.METRIC_INNER_PRODUCT)
    )


def train_quantizer(ivf: Any, sample: FloatArray) -> None:
    """Fills ``ivf``'s flat quantizer (``trains_own_quantizer``) with ``ivf.nlist`` centroids:
    faiss's k-means with the IVF's own ``cp`` (10 iterations, seed 1234, spherical for inner
    product, at most 256 points per centroid), started from k-means++ seeds
    (``kmeans_plus_plus``, from at most ``SEED_ROWS_PER_LIST`` rows a list) instead of
    faiss's uniformly drawn points. ``ivf.train`` then
    trains the rest (a PQ) and leaves the quantizer as it is. ``sample``: float32 rows, at
    least ``nlist``. Measured (docs/search.md): on 20k x 128 clustered vectors (256 clusters,
    560 lists) the lists scanned per query fell 25-40% at equal or better recall (random
    starts leave some clusters without a centroid); on MiniLM and 200k x 128 within the
    spread of faiss's seeds."""
    import faiss

    nlist, dim = int(ivf.nlist), int(ivf.d)
    clustering = faiss.Clustering(dim, nlist, ivf.cp)
    seed = int(ivf.cp.seed)
    rows_max = SEED_ROWS_PER_LIST * nlist
    pool = sample
    if sample.shape[0] > rows_max:  # seeds from a uniform subset: each draw reads it once
        subset = np.random.default_rng(seed).choice(sample.shape[0], rows_max, replace=False)
        pool = sample[np.sort(subset)]
    seeds = kmeans_plus_plus(pool, nlist, seed=seed)
    faiss.copy_array_to_vector(seeds.ravel(), clustering.centroids)
    clustering.train(sample, ivf.quantizer)  # leaves the final centroids in the quantizer
    ivf.quantizer.is_trained = True


def kmeans_plus_plus(sample: FloatArray, count: int, *, seed: int) -> FloatArray:
    """``count`` rows of ``sample`` drawn by k-means++ (Arthur and Vassilvitskii, 2007): the
    first uniformly, each next with probability proportional to its squared L2 distance to
    the nearest row drawn so far. Deterministic for a seed. One pass over ``sample`` per row
    drawn (a float32 matrix-vector product). A whole 200k x 128 training at 1,776 lists (with
    the k-means) took 21.6 s of CPU seeding from 88,800 rows, 11.8 s from 28,416, against
    faiss's 6-7 s from uniform draws (one loaded core)."""
    rows = sample.shape[0]
    if not 1 <= count <= rows:
        raise InvalidArgument(f"cannot draw {count} seeds from {rows} rows")
    rng = np.random.default_rng(seed)
    norms = np.einsum("ij,ij->i", sample, sample, dtype=np.float64)
    chosen = np.empty((count,), dtype=np.int64)
    chosen[0] = rng.integers(rows)
    nearest = np.full((rows,), np.inf)
    for drawn in range(1, count + 1):
        last = int(chosen[drawn - 1])
        squared = norms - 2.0 * (sample @ sample[last]) + norms[last]
        np.minimum(nearest, np.maximum(squared, 0.0), out=nearest)
        if drawn == count:
            break
        total = np.cumsum(nearest)
        if total[-1] <= 0.0:  # every row equals a seed: draw the rest uniformly
            chosen[drawn:] = rng.choice(rows, size=count - drawn, replace=False)
            break
        pick = int(np.searchsorted(total, rng.random() * total[-1], side="right"))
        chosen[drawn] = min(pick, rows - 1)
    seeds: FloatArray = np.ascontiguousarray(sample[chosen], dtype=np.float32)
    return seeds


def read_centroids(quantizer: Any) -> FloatArray:
    """A copy of the vectors of a faiss flat index, ``(ntotal, d)``."""
    import faiss

    count, dim = int(quantizer.ntotal), int(quantizer.d)
    flat = faiss.rev_swig_ptr(quantizer.get_xb(), count * dim)
    return np.array(flat, dtype=np.float32).reshape(count, dim)


def encode_probe_lists(lists: ProbeLists) -> bytes:
    return np.ascontiguousarray(lists, dtype="<i4").tobytes()


def decode_probe_lists(data: bytes, rows: int, probes: int, nlist: int) -> ProbeLists:
    """Probe lists from the wire, checked: ``rows x probes`` int32, each in ``0..nlist-1``."""
    if not 1 <= probes <= nlist:
        raise InvalidArgument(f"probes must be in 1..{nlist}, got {probes}")
    if len(data) != 4 * rows * probes:
        raise InvalidArgument(f"{len(data)} bytes cannot hold {rows}x{probes} probe lists")
    lists = np.frombuffer(data, dtype="<i4").astype(np.int64).reshape(rows, probes)
    if lists.size and (int(lists.min()) < 0 or int(lists.max()) >= nlist):
        raise InvalidArgument(f"a probe list is outside 0..{nlist - 1}")
    return lists


class CoarseQuantizer:
    """The collection's centroids at the coordinator: assigns each query its probe lists.

    ``assign`` is safe to call from several threads at once."""

    def __init__(self, centroids: FloatArray, metric: Metric, *, threads: int = 1) -> None:
        """``threads``: threads one ``assign`` call splits its rows over (default 1, see there)."""
        if centroids.ndim != 2 or centroids.shape[0] < 1:
            raise InvalidArgument("centroids must be a non-empty 2-D array")
        if threads < 1:
            raise InvalidArgument(f"threads must be positive, got {threads}")
        self.threads = threads
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.metric = metric
        self._quantizer = flat_quantizer(self.centroids, metric)
        self._pool: ThreadPoolExecutor | None = None  # made on the first split call
        self._pool_workers = 0
        self._pool_lock = threading.Lock()

    @property
    def nlist(self) -> int:
        return int(self.centroids.shape[0])

    def assign(self, queries: FloatArray, nprobe: int, threads: int | None = None) -> ProbeLists:
        """The ``min(nprobe, nlist)`` nearest lists of each query row, nearest first.
        ``queries`` are validated (normalised for cosine) float32 rows.

        The rows are split into up to ``threads`` slices (default: the quantiser's
        ``threads``) of at least ``BLAS_ROWS_MIN`` rows, searched at once on as many
        threads, each running faiss on one OpenMP thread (the setting is the calling
        thread's own, restored after). Threads rather than OpenMP's own: on a loaded 2-core
        machine faiss's two OpenMP threads spent 42 ms of CPU (140 ms wall) on a
        1,000 x 1,776 x 128 assignment that one thread did in 7.7 ms (20 ms wall), spinning
        while they waited for each other; two slices on two threads spin on nothing, so
        they cost one thread's CPU (plus a few percent) loaded and half its wall time idle."""
        if nprobe < 1:
            raise InvalidArgument(f"nprobe must be positive, got {nprobe}")
        probes = min(nprobe, self.nlist)
        wanted = self.threads if threads is None else max(1, threads)
        rows = queries.shape[0]
        slices = min(wanted, max(1, rows // BLAS_ROWS_MIN))
        if slices == 1:
            return self._assign_rows(queries, probes)
        edges = [rows * part // slices for part in range(slices + 1)]
        pool = self._threads(wanted)
        futures = [
            pool.submit(self._assign_rows, queries[start:stop], probes)
            for start, stop in pairwise(edges[1:])
        ]
        first = self._assign_rows(queries[: edges[1]], probes)  # the caller's own slice
        assigned: ProbeLists = np.concatenate([first, *(future.result() for future in futures)])
        return assigned

    def _assign_rows(self, rows: FloatArray, probes: int) -> ProbeLists:
        import faiss

        previous = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            _, lists = self._quantizer.search(rows, probes)
        finally:
            faiss.omp_set_num_threads(previous)
        assigned: ProbeLists = lists
        return assigned

    def _threads(self, wanted: int) -> ThreadPoolExecutor:
        """The helper threads (``wanted - 1``; grown when a call wants more)."""
        with self._pool_lock:
            if self._pool is None or self._pool_workers < wanted - 1:
                old, self._pool = (
                    self._pool,
                    ThreadPoolExecutor(wanted - 1, thread_name_prefix="coarse-search"),
                )
                self._pool_workers = wanted - 1
                if old is not None:
                    old.shutdown(wait=False)
            return self._pool

    def close(self) -> None:
        """Stops the helper threads (an ``assign`` after this makes new ones)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
                self._pool, self._pool_workers = None, 0


def prefer_blas(dim: int, rows: int = BLAS_ROWS_MIN) -> None:
    """Process-wide: faiss's exhaustive (flat) searches of ``rows`` or more queries of ``dim``
    go through BLAS. faiss 1.15 waits for ``rows x dim`` >= 128,000 (1,000 rows of 128 dims);
    below that its SIMD loop cost a 1,776-list coarse search 13-14 us a row on one thread,
    against 7-10 us through BLAS for chunks of 125-500 rows, with identical lists. The
    threshold is faiss's global, so this is the process owner's call: ``serve`` makes it for
    a coordinator's process, which runs no other faiss search. Only ever lowers it."""
    import faiss

    current = int(faiss.cvar.distance_compute_blas_threshold)
    faiss.cvar.distance_compute_blas_threshold = min(current, rows * dim)


def _centroids_of(link: Any, timeout_s: float) -> FloatArray | None:
    reply = link.call("GetCentroids", search_pb2.InfoRequest(), timeout_s)
    if reply.rows == 0:
        return None
    return np.frombuffer(reply.values, dtype="<f4").reshape(reply.rows, reply.dim).copy()


def sync_centroids(
    replicas: Sequence[Any], metric: Metric, timeout_s: float
) -> CoarseQuantizer | None:
    """Read the centroids of every reachable replica (``ReplicaLink``s of shared-IVF shards);
    give them to the replicas that have none (a new shard) and return the quantiser, or
    ``None`` when no replica has been trained. Raises ``FailedPrecondition`` when two replicas
    hold different centroids, and a replica's non-retryable error."""
    found: list[tuple[Any, FloatArray | None]] = []
    for link in replicas:
        try:
            found.append((link, _centroids_of(link, timeout_s)))
        except BlocksError as error:
            if not error.retryable:
                raise
    held = [centroids for _, centroids in found if centroids is not None]
    if not held:
        return None
    first = held[0]
    if any(c.shape != first.shape or not np.array_equal(c, first) for c in held[1:]):
        raise FailedPrecondition("shards hold different IVF centroids: retrain the collection")
    batch = search_pb2.VectorBatch(rows=first.shape[0], dim=first.shape[1])
    batch.values = first.astype("<f4").tobytes()
    for link, centroids in found:
        if centroids is None:
            link.call("SetCentroids", batch, timeout_s)
    return CoarseQuantizer(first, metric)
