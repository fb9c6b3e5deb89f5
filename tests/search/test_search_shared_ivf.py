"""One coarse quantiser for a sharded IVF (``blocks.search.coarse``, ``shared_ivf``).

The shards here are real ``SearchNode``s behind real ``SearchService`` handlers, called through
a stand-in link that runs the handler on an event loop thread (the ``ReplicaLink`` interface:
``start`` returns a future), so the coordinator, the service, the node, its journal and the
index all run as they do across processes, without the processes.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from blocks.core.errors import FailedPrecondition, InvalidArgument, Unavailable
from blocks.search import FaissIndex, search_pb2
from blocks.search.api import Metric
from blocks.search.coarse import (
    CoarseQuantizer,
    decode_probe_lists,
    encode_probe_lists,
    parse_nlist,
    sync_centroids,
)
from blocks.search.coordinator_index import Coordinator
from blocks.search.node import SearchNode
from blocks.search.replica_link import outcome
from blocks.search.routing import default_shard_names
from blocks.search.service import SearchService, make_vector_index
from blocks.search.shared_ivf import SharedIVFIndex
from blocks.search.vectors import as_vectors
from blocks.search.wire import encode_batch

DIM, NLIST, ROWS = 8, 32, 3_000


class ServiceLink:
    """A ``ReplicaLink`` stand-in: the call runs in a real ``SearchService`` on ``loop``."""

    def __init__(self, node: SearchNode, loop: asyncio.AbstractEventLoop) -> None:
        self.node = node
        self.service = SearchService(node)
        self.loop = loop
        self.down = False
        self.searches: list[Any] = []  # the SearchVectors requests received

    def start(self, method: str, request: Any, timeout_s: float) -> Any:
        if method == "SearchVectors":
            self.searches.append(request)
        if self.down:
            failed: Future[Any] = Future()
            failed.set_exception(Unavailable("stand-in down"))
            return failed
        handler = getattr(self.service, method)
        return asyncio.run_coroutine_threadsafe(handler(request, None), self.loop)

    def call(self, method: str, request: Any, timeout_s: float) -> Any:
        return outcome(self.start(method, request, timeout_s))

    def close(self) -> None:
        pass


def shard_node(metric: Metric, data_dir: Path | None = None) -> SearchNode:
    index = make_vector_index(DIM, metric.value, kind="shared-ivf", spec=f"IVF{NLIST}")
    node = SearchNode(
        index, kind="shared-ivf", data_dir=None if data_dir is None else str(data_dir)
    )
    node.load()
    return node


def cluster(
    links: list[ServiceLink], metric: Metric, coarse: CoarseQuantizer | None = None
) -> Coordinator:
    names = default_shard_names(len(links))
    shards: Any = [(name, [link]) for name, link in zip(names, links, strict=True)]
    return Coordinator(shards, dim=DIM, metric=metric, nlist=NLIST, coarse=coarse)


def data(seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, DIM)) * 4
    vectors = centres[rng.integers(0, 40, size=ROWS)] + rng.normal(size=(ROWS, DIM))
    queries = centres[rng.integers(0, 40, size=25)] + rng.normal(size=(25, DIM))
    return vectors.astype(np.float32), queries.astype(np.float32)


@pytest.mark.parametrize("metric", list(Metric))
def test_four_shards_answer_as_one_ivf_over_every_vector(
    metric: Metric, loop: asyncio.AbstractEventLoop
) -> None:
    vectors, queries = data()
    links = [ServiceLink(shard_node(metric), loop) for _ in range(4)]
    coordinator = cluster(links, metric)
    coordinator.train(vectors[:2_000])
    coordinator.add(np.arange(ROWS), vectors)
    assert all(0 < len(link.node.vectors) < ROWS for link in links)
    # The single index the benchmark compares with: faiss's own IVF trained on the same sample.
    single = FaissIndex(DIM, f"IVF{NLIST},Flat", metric)
    single.train(vectors[:2_000])
    single.add(np.arange(ROWS), vectors)
    for nprobe in (1, 3, NLIST):
        got = coordinator.search(queries, 10, nprobe=nprobe)
        want = single.search(queries, 10, nprobe=nprobe)
        assert not got.partial
        assert got.ids.tolist() == want.ids.tolist(), nprobe
        np.testing.assert_allclose(got.distances, want.distances, rtol=1e-5, atol=1e-5)
        # Every shard got the coordinator's lists, the same ones, and no nprobe of its own.
        sent = [link.searches[-1] for link in links]
        assert all(r.probes == min(nprobe, NLIST) and r.nprobe == 0 for r in sent)
        assert len({r.probe_lists for r in sent}) == 1 and len(sent[0].probe_lists) > 0
    allowed = np.arange(0, ROWS, 3)
    got = coordinator.search(queries, 10, allowed, nprobe=4)
    want = single.search(queries, 10, allowed, nprobe=4)
    assert got.ids.tolist() == want.ids.tolist() and set(got.ids.ravel()) <= {-1, *allowed}


def test_the_shards_scan_together_exactly_what_the_single_index_scans() -> None:
    vectors, queries = data()
    metric = Metric.L2
    single = SharedIVFIndex(DIM, NLIST, metric)
    single.train(vectors[:2_000])
    single.add(np.arange(ROWS), vectors)
    centroids = single.centroids()
    assert centroids is not None
    shards = [SharedIVFIndex(DIM, NLIST, metric) for _ in range(4)]
    for number, shard in enumerate(shards):
        shard.set_centroids(centroids)
        shard.add(np.arange(number, ROWS, 4), vectors[number::4])
    lists = CoarseQuantizer(centroids, metric).assign(queries, 3)
    stats = faiss.cvar.indexIVF_stats
    stats.reset()
    single.search(queries, 10, nprobe=3)
    single_scanned = int(stats.ndis)
    stats.reset()
    for shard in shards:
        shard.search_preassigned(queries, 10, lists)
    assert int(stats.ndis) == single_scanned > 0
    # Only the given lists are scanned: a row's farthest list shares no id with its nearest
    # (lists are disjoint; compared row by row, since one row's farthest list may be another's
    # nearest).
    far = CoarseQuantizer(centroids, metric).assign(queries, NLIST)[:, -1:]
    near_ids = single.search(queries, 5, nprobe=1).ids
    far_ids = shards[0].search_preassigned(queries, 5, far).ids
    assert (far_ids >= 0).any()
    for near_row, far_row in zip(near_ids.tolist(), far_ids.tolist(), strict=True):
        assert not (set(near_row) & set(far_row)) - {-1}


def test_centroids_are_fixed_once_set_and_required_before_add() -> None:
    vectors, _ = data()
    index = SharedIVFIndex(DIM, NLIST, Metric.L2)
    with pytest.raises(FailedPrecondition):
        index.add([1], vectors[:1])
    assert index.search(vectors[:2], 3).ids.tolist() == [[-1] * 3] * 2
    index.train(vectors)
    centroids = index.centroids()
    assert centroids is not None
    index.set_centroids(centroids)  # the same: a no-op
    index.train(vectors[::-1])  # trained: a no-op
    assert np.array_equal(index.centroids(), centroids)
    with pytest.raises(FailedPrecondition):
        index.set_centroids(centroids + 1)
    with pytest.raises(InvalidArgument):
        index.set_centroids(centroids[:-1])
    for bad in ("IVF0", "HNSW32", "IVF16,PQ8", "Flat"):
        with pytest.raises(InvalidArgument):
            parse_nlist(bad)
    assert parse_nlist("IVF1776,Flat") == parse_nlist("IVF1776") == 1776


def test_probe_lists_on_the_wire_are_checked() -> None:
    lists = np.array([[0, 5], [31, 2]])
    assert decode_probe_lists(encode_probe_lists(lists), 2, 2, NLIST).tolist() == lists.tolist()
    for blob, rows, probes in (
        (encode_probe_lists(lists), 2, 3),  # short
        (encode_probe_lists(lists) + b"\0", 2, 2),  # trailing byte
        (encode_probe_lists(np.array([[0, 32]])), 1, 2),  # outside 0..nlist-1
        (encode_probe_lists(np.array([[-1, 0]])), 1, 2),
        (b"", 0, 0),  # no probes
    ):
        with pytest.raises(InvalidArgument):
            decode_probe_lists(blob, rows, probes, NLIST)


def test_a_node_of_another_kind_refuses_probe_lists(loop: asyncio.AbstractEventLoop) -> None:
    link = ServiceLink(SearchNode(make_vector_index(DIM, "l2")), loop)
    request = search_pb2.SearchVectorsRequest(k=3, probes=1, probe_lists=b"\0\0\0\0")
    request.queries.CopyFrom(encode_batch(np.zeros((1, DIM), dtype=np.float32)))
    with pytest.raises(InvalidArgument):
        link.call("SearchVectors", request, 5)
    with pytest.raises(InvalidArgument):
        link.call("SetCentroids", encode_batch(np.zeros((NLIST, DIM), np.float32)), 5)


def test_search_before_training_fails_and_train_pushes_to_every_replica(
    loop: asyncio.AbstractEventLoop,
) -> None:
    vectors, queries = data()
    links = [ServiceLink(shard_node(Metric.L2), loop) for _ in range(3)]
    names = default_shard_names(2)
    coordinator = Coordinator(
        [(names[0], links[:2]), (names[1], links[2:])],  # type: ignore[list-item]
        dim=DIM,
        metric=Metric.L2,
        nlist=NLIST,
    )
    with pytest.raises(FailedPrecondition):
        coordinator.search(queries, 5)
    coordinator.train(vectors)
    held = [link.node.vectors.centroids() for link in links]  # type: ignore[attr-defined]
    assert all(c is not None and np.array_equal(c, held[0]) for c in held)


def test_a_crashed_shard_keeps_its_centroids_and_vectors_and_a_new_coordinator_reads_them(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    vectors, queries = data()
    metric = Metric.COSINE
    nodes = [shard_node(metric, tmp_path / f"s{n}") for n in range(3)]
    coordinator = cluster([ServiceLink(node, loop) for node in nodes], metric)
    coordinator.train(vectors[:1_500])
    coordinator.add(np.arange(ROWS), vectors)
    coordinator.remove(np.arange(0, ROWS, 10))
    before = coordinator.search(queries, 10, nprobe=4)
    for node in nodes:  # a crash after the acknowledgements: the log, no snapshot
        assert node.journal is not None and node.journal.snapshot_path is None
        node.close()
    again = [shard_node(metric, tmp_path / f"s{n}") for n in range(3)]
    assert sum(len(node.vectors) for node in again) == ROWS - ROWS // 10
    links = [ServiceLink(node, loop) for node in again]
    coarse = sync_centroids(links, metric, 5)
    assert coarse is not None and coordinator.coarse is not None
    assert np.array_equal(coarse.centroids, coordinator.coarse.centroids)
    after = cluster(links, metric, coarse).search(queries, 10, nprobe=4)
    assert after.ids.tolist() == before.ids.tolist()
    # A snapshot, then a restart from it, answers the same too.
    for node in again:
        node.save()
        node.close()
    reloaded = [ServiceLink(shard_node(metric, tmp_path / f"s{n}"), loop) for n in range(3)]
    assert cluster(reloaded, metric, coarse).search(queries, 10, nprobe=4).ids.tolist() == (
        before.ids.tolist()
    )


def test_a_new_shard_is_given_the_centroids_and_disagreeing_shards_are_refused(
    loop: asyncio.AbstractEventLoop,
) -> None:
    vectors, _ = data()
    old = [ServiceLink(shard_node(Metric.L2), loop) for _ in range(2)]
    cluster(old, Metric.L2).train(vectors)
    new = ServiceLink(shard_node(Metric.L2), loop)
    assert new.node.vectors.centroids() is None  # type: ignore[attr-defined]
    coarse = sync_centroids([*old, new], Metric.L2, 5)
    assert coarse is not None
    assert np.array_equal(new.node.vectors.centroids(), coarse.centroids)  # type: ignore[attr-defined]
    assert sync_centroids([ServiceLink(shard_node(Metric.L2), loop)], Metric.L2, 5) is None
    other = ServiceLink(shard_node(Metric.L2), loop)
    cluster([other], Metric.L2).train(vectors[::-1][:500])
    with pytest.raises(FailedPrecondition):
        sync_centroids([*old, other], Metric.L2, 5)


def test_a_missing_shard_is_flagged_and_the_rest_is_the_single_index_over_the_rest(
    loop: asyncio.AbstractEventLoop,
) -> None:
    vectors, queries = data()
    links = [ServiceLink(shard_node(Metric.L2), loop) for _ in range(4)]
    coordinator = cluster(links, Metric.L2)
    coordinator.train(vectors)
    coordinator.add(np.arange(ROWS), vectors)
    links[2].down = True
    with pytest.raises(Unavailable):
        coordinator.search(queries, 10, nprobe=4)
    got = coordinator.search(queries, 10, nprobe=4, allow_partial=True)
    assert got.partial and got.missing_shard_names == ("shard-2",)
    rest = np.concatenate(
        [link.node.vectors.ids() for link in links if not link.down]  # type: ignore[attr-defined]
    )
    single = SharedIVFIndex(DIM, NLIST, Metric.L2)
    assert coordinator.coarse is not None
    single.set_centroids(coordinator.coarse.centroids)
    single.add(rest, vectors[rest])
    want = single.search(queries, 10, nprobe=4)
    assert got.ids.tolist() == want.ids.tolist()
    rows = as_vectors(queries, DIM)
    assert coordinator.coarse.assign(rows, 4).shape == (len(queries), 4)


def test_the_coordinators_assignment_splits_rows_over_threads_of_one_openmp_thread_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vectors, _ = data()
    queries = np.random.default_rng(3).normal(size=(300, DIM)).astype(np.float32)
    coarse = CoarseQuantizer(vectors[:NLIST], Metric.L2)
    want = coarse.assign(queries, 3)  # one thread, the whole batch
    before = faiss.omp_get_max_threads()
    seen: list[tuple[int, str]] = []
    lock = threading.Lock()
    real = faiss.omp_set_num_threads

    def record(threads: int) -> None:
        with lock:
            seen.append((threads, threading.current_thread().name))
        real(threads)

    monkeypatch.setattr(faiss, "omp_set_num_threads", record)
    assert coarse.assign(queries, 3).tolist() == want.tolist()
    assert [n for n, _ in seen] == [1, before] and faiss.omp_get_max_threads() == before
    seen.clear()
    # A coordinator's --coarse-threads 3: three slices of 100 rows on the caller's thread and
    # the pool's, the rows in order, every faiss call on one OpenMP thread and each thread's
    # own setting restored (a pool thread starts from OpenMP's default, which need not be the
    # caller's: torch.set_num_threads elsewhere in the process changes the caller's).
    assert coarse.assign(queries, 3, 3).tolist() == want.tolist()
    by_thread: dict[str, list[int]] = {}
    for threads, name in seen:
        by_thread.setdefault(name, []).append(threads)
    assert by_thread.pop(threading.current_thread().name) == [1, before]
    assert by_thread and sum(len(values) for values in by_thread.values()) == 4
    assert all(values[0::2] == [1] * (len(values) // 2) for values in by_thread.values())
    assert faiss.omp_get_max_threads() == before
    seen.clear()
    assert coarse.assign(queries[:100], 3, 3).tolist() == want[:100].tolist()
    assert len(seen) == 2  # under two slices of BLAS_ROWS_MIN rows: no split
    coarse.close()
    with pytest.raises(InvalidArgument):
        CoarseQuantizer(vectors[:NLIST], Metric.L2, threads=0)
    with pytest.raises(InvalidArgument):
        Coordinator([("a", [object()])], dim=DIM, metric="l2", nlist=NLIST, coarse_threads=0)  # type: ignore[list-item]


def test_a_replica_without_centroids_is_given_them_on_its_first_write(
    loop: asyncio.AbstractEventLoop,
) -> None:
    vectors, queries = data()
    first, late = ServiceLink(shard_node(Metric.L2), loop), ServiceLink(shard_node(Metric.L2), loop)
    late.down = True  # not reachable when the centroids are trained and pushed
    shards: Any = [("shard-0", [first, late])]
    coordinator = Coordinator(shards, dim=DIM, metric=Metric.L2, nlist=NLIST)
    with pytest.raises(Unavailable):
        coordinator.train(vectors)
    late.down = False  # it comes back empty; the centroids were set everywhere else
    assert coordinator.coarse is None
    coordinator.train(vectors)  # pushes again (idempotent where set)
    assert late.node.vectors.centroids() is not None  # type: ignore[attr-defined]
    emptied = ServiceLink(shard_node(Metric.L2), loop)  # a replica replaced by an empty one
    coordinator = Coordinator(
        [("shard-0", [first, emptied])],  # type: ignore[list-item]
        dim=DIM,
        metric=Metric.L2,
        nlist=NLIST,
        coarse=coordinator.coarse,
    )
    coordinator.add(np.arange(ROWS), vectors)
    assert len(emptied.node.vectors) == len(first.node.vectors) == ROWS
    got = [link.node.vectors.search(queries, 5, nprobe=3).ids for link in (first, emptied)]
    assert got[0].tolist() == got[1].tolist()
