"""ShardedIndex: metric-aware merge, equality with one index, replicas, deadlines, rollback."""

from __future__ import annotations

import threading
from itertools import pairwise
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from blocks.core.errors import InvalidArgument, Timeout, Unavailable
from blocks.search import ExactIndex, FaissIndex, Metric, SearchResult, ShardedIndex
from blocks.search.contract import check_search
from blocks.search.merge import merge_topk, shard_of
from blocks.search.vectors import brute_force


@given(
    metric=st.sampled_from(list(Metric)),
    shards=st.integers(1, 5),
    k=st.integers(1, 12),
    distances=hnp.arrays(np.float32, 30, elements=st.integers(-5, 5).map(float)),
)
def test_merge_equals_global_top_k(metric, shards, k, distances) -> None:
    """Split 30 scored ids over shards, take each shard's top k, merge: equals global top k."""
    ids = np.arange(30, dtype=np.int64)
    owner = ids % shards
    parts = []
    for shard in range(shards):
        mine = owner == shard
        keys = -distances[mine] if metric.higher_is_better else distances[mine]
        order = np.lexsort((ids[mine], keys))[:k]
        part_ids = np.full((1, k), -1, dtype=np.int64)
        part_dist = np.full((1, k), metric.worst, dtype=np.float32)
        part_ids[0, : len(order)] = ids[mine][order]
        part_dist[0, : len(order)] = distances[mine][order]
        parts.append((part_ids, part_dist))
    got_ids, got_dist = merge_topk(parts, k, metric)
    keys = -distances if metric.higher_is_better else distances
    want = np.lexsort((ids, keys))[:k]
    assert got_ids[0].tolist() == ids[want].tolist()
    assert got_dist[0].tolist() == distances[want].tolist()


def test_shard_of_is_stable_and_spread() -> None:
    ids = np.arange(100_000, dtype=np.int64)
    owners = shard_of(ids, 4)
    assert shard_of(ids[:5], 4).tolist() == owners[:5].tolist()
    # Pinned placement: SplitMix64's known first output for seed 0 is 0xE220A8397B1DCDAF.
    mask = (1 << 64) - 1

    def mix(x: int) -> int:
        z = (x + 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    assert mix(0) == 0xE220A8397B1DCDAF
    sample = [0, 1, 2, 12345, 2**62 + 7]
    assert shard_of(np.array(sample), 7).tolist() == [mix(i) % 7 for i in sample]
    counts = np.bincount(owners, minlength=4)
    assert counts.min() > 24_000


@given(
    metric=st.sampled_from(list(Metric)),
    shards=st.integers(1, 6),
    k=st.integers(1, 60),
    seed=st.integers(0, 2**16),
)
def test_sharded_equals_unsharded(metric, shards, k, seed) -> None:
    rng = np.random.default_rng(seed)
    corpus = rng.integers(-2, 3, size=(50, 3)).astype(np.float32)
    corpus[np.abs(corpus).sum(axis=1) == 0] = 1.0
    ids = rng.permutation(1000)[:50]
    queries = rng.integers(-2, 3, size=(4, 3)).astype(np.float32) + np.float32(0.5)
    single = ExactIndex(3, metric)
    single.add(ids, corpus)
    sharded = ShardedIndex.build(lambda: ExactIndex(3, metric, corpus_tile=4), shards)
    sharded.add(ids, corpus)
    try:
        model = dict(zip(ids.tolist(), corpus, strict=True))
        for _round in range(2):
            want, got = single.search(queries, k), sharded.search(queries, k)
            assert np.allclose(got.distances, want.distances, atol=1e-5)
            if metric is Metric.COSINE:  # rounding differs with matrix shapes: near-ties may swap
                check_search(got, model, queries, k, metric, exact=True)
            else:  # every distance is exact: ids equal, ties broken by id on both sides
                assert np.array_equal(got.ids, want.ids)
            gone = ids[_round::3]
            sharded.remove(gone)
            single.remove(gone)
            for item in gone.tolist():
                model.pop(item, None)
            assert not np.isin(sharded.search(queries, k).ids, gone).any()
    finally:
        sharded.close()


class Blocking:
    """A shard replica whose searches wait for ``release`` (a stuck node)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.release = threading.Event()
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __len__(self) -> int:
        return len(self.inner)

    def search(self, *args: Any, **kwargs: Any) -> SearchResult:
        self.calls += 1
        assert self.release.wait(10), "test did not release the shard"
        return self.inner.search(*args, **kwargs)


class Failing:
    """A replica that is down: every call raises ``Unavailable``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __len__(self) -> int:
        return len(self.inner)

    def _maybe_fail(self) -> None:
        if self.down:
            raise Unavailable("replica down")

    def add(self, *args: Any) -> None:
        self._maybe_fail()
        self.inner.add(*args)

    def search(self, *args: Any, **kwargs: Any) -> SearchResult:
        self._maybe_fail()
        return self.inner.search(*args, **kwargs)


DATA = np.random.default_rng(7).normal(size=(400, 6)).astype(np.float32)


def _filled(groups: list[list[Any]], **options: Any) -> ShardedIndex:
    index = ShardedIndex(groups, **options)
    index.add(np.arange(400), DATA)
    return index


def test_slow_shard_gives_partial_result_or_timeout() -> None:
    slow = Blocking(ExactIndex(6, "l2"))
    index = _filled([[ExactIndex(6, "l2")], [slow], [ExactIndex(6, "l2")]], timeout_ms=100)
    slow.release.set()
    full = index.search(DATA[:3], 10)
    assert not full.partial
    slow.release.clear()
    try:
        with pytest.raises(Timeout):
            index.search(DATA[:3], 10)
        partial = index.search(DATA[:3], 10, allow_partial=True)
        assert partial.partial and partial.missing_shards == (1,)
        owners = shard_of(np.arange(400), 3)
        missing_ids = set(np.flatnonzero(owners == 1).tolist())
        assert not missing_ids & set(partial.ids.ravel().tolist())
        survivors = np.flatnonzero(owners != 1)
        want, _ = brute_force(survivors, DATA[survivors], DATA[:3], 10, Metric.L2)
        assert np.array_equal(partial.ids, want)
    finally:
        slow.release.set()
        index.close()


def test_stuck_shard_is_not_given_more_work() -> None:
    slow = Blocking(ExactIndex(6, "ip"))
    index = _filled([[ExactIndex(6, "ip")], [slow]], timeout_ms=20, inflight_per_shard_max=2)
    slow.release.set()
    index.search(DATA[:1], 1)
    slow.release.clear()
    calls = slow.calls
    try:
        for _ in range(5):
            assert index.search(DATA[:1], 3, allow_partial=True).partial
        assert slow.calls - calls == 2  # the rest were refused at once
    finally:
        slow.release.set()
        index.close()


def test_replica_failover_and_unavailable() -> None:
    first, second = Failing(ExactIndex(6, "cosine")), ExactIndex(6, "cosine")
    first.down = False
    index = _filled([[first, second], [ExactIndex(6, "cosine")]])
    reference = ExactIndex(6, "cosine")
    reference.add(np.arange(400), DATA)
    first.down = True
    for _ in range(4):  # whichever replica the rotation starts with, the answer is complete
        result = index.search(DATA[:5], 7)
        assert not result.partial
        assert np.array_equal(result.ids, reference.search(DATA[:5], 7).ids)
    index.add([1000], DATA[:1])  # the down replica is marked down, the write still lands
    assert index.down_replicas() == [(0, 0)] or shard_of(np.array([1000]), 2)[0] == 1
    lone = Failing(ExactIndex(6, "cosine"))
    broken = ShardedIndex([[lone], [ExactIndex(6, "cosine")]])
    try:
        with pytest.raises(Unavailable):
            broken.search(DATA[:1], 3)
        assert broken.search(DATA[:1], 3, allow_partial=True).missing_shards == (0,)
    finally:
        broken.close()
        index.close()


def test_failed_add_rolls_back_every_shard() -> None:
    index = ShardedIndex.build(lambda: ExactIndex(6, "l2"), 4)
    index.add([3], DATA[:1])
    with pytest.raises(InvalidArgument):
        index.add(np.arange(10), DATA[:10])  # id 3 is present on its shard
    assert len(index) == 1
    with pytest.raises(InvalidArgument):
        index.add([1, 2], DATA[:2] * np.nan)
    with pytest.raises(InvalidArgument):
        ShardedIndex([ExactIndex(6, "l2"), ExactIndex(5, "l2")])
    index.close()


def test_sharded_faiss_passes_search_parameters(tmp_path) -> None:
    index = ShardedIndex.build(lambda: FaissIndex(6, "HNSW8", "l2"), 2, replicas=2)
    index.add(np.arange(400), DATA)
    result = index.search(DATA[:10], 5, ef_search=128)
    assert result.ids[:, 0].tolist() == list(range(10))
    index.save(str(tmp_path / "sharded"))
    fresh = ShardedIndex.build(lambda: FaissIndex(6, "HNSW8", "l2"), 2, replicas=2)
    fresh.load(str(tmp_path / "sharded"))
    assert len(fresh) == 400
    assert np.array_equal(fresh.search(DATA[:10], 5, ef_search=128).ids, result.ids)
    index.close()
    fresh.close()


def _merge_model(parts: list[tuple[np.ndarray, np.ndarray]], k: int, metric: Metric) -> Any:
    """Row by row: each id once at its best distance, ordered by (distance in the metric's
    direction, id), padded with -1 and the worst distance."""
    rows = parts[0][0].shape[0]
    ids = np.full((rows, k), -1, dtype=np.int64)
    distances = np.full((rows, k), metric.worst, dtype=np.float32)
    sign = -1.0 if metric.higher_is_better else 1.0
    for row in range(rows):
        best: dict[int, float] = {}
        for part_ids, part_distances in parts:
            pairs = zip(part_ids[row].tolist(), part_distances[row].tolist(), strict=True)
            for item, distance in pairs:
                if item >= 0 and (item not in best or sign * distance < sign * best[item]):
                    best[item] = distance
        ranked = sorted(best.items(), key=lambda pair: (sign * pair[1], pair[0]))[:k]
        for column, (item, distance) in enumerate(ranked):
            ids[row, column], distances[row, column] = item, distance
    return ids, distances


def test_merge_with_repeated_ids_matches_a_row_by_row_model() -> None:
    """The vectorised ``unique_ids`` merge keeps each id once, at its best-ranked occurrence,
    with ties, padding and ids repeated within and across parts."""
    rng = np.random.default_rng(19)
    for trial in range(400):
        metric = list(Metric)[trial % 3]
        rows, k = int(rng.integers(1, 6)), int(rng.integers(1, 12))
        parts = [
            (
                rng.integers(-1, 12, (rows, width)),
                rng.integers(0, 4, (rows, width)).astype(np.float32),
            )
            for width in rng.integers(1, 9, int(rng.integers(1, 5))).tolist()
        ]
        ids, distances = merge_topk(parts, k, metric, unique_ids=True)
        want_ids, want_distances = _merge_model(parts, k, metric)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(distances, want_distances)


def test_merge_of_disjoint_parts_breaks_ties_by_id_in_every_row() -> None:
    """Many rows at once, ids never repeated (the usual case, sorted by key and re-sorted by
    (key, id) only where a tie shows in the first k + 1 places): rows without ties, rows with
    ties inside the top k and at its edge, and padded rows all match the row-by-row model."""
    rng = np.random.default_rng(23)
    for trial in range(60):
        metric = list(Metric)[trial % 3]
        rows, k, widths = 50, int(rng.integers(1, 12)), rng.integers(1, 9, 4).tolist()
        ids = rng.permutation(1_000)[: rows * sum(widths)].reshape(rows, -1)
        ids[rng.random(ids.shape) < 0.05] = -1  # some padding
        tied = rng.random(rows) < 0.5  # half the rows draw from a few values: many ties
        distances = np.where(
            tied[:, None], rng.integers(0, 3, ids.shape), rng.random(ids.shape)
        ).astype(np.float32)
        edges = np.cumsum([0, *widths])
        parts = [(ids[:, a:b], distances[:, a:b]) for a, b in pairwise(edges)]
        got_ids, got_distances = merge_topk(parts, k, metric, unique_ids=True)
        want_ids, want_distances = _merge_model(parts, k, metric)
        np.testing.assert_array_equal(got_ids, want_ids)
        np.testing.assert_array_equal(got_distances, want_distances)
