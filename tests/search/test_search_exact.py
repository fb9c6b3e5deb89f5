"""ExactIndex (torch) against brute-force numpy: every metric, ties, k > n, tiling, bad input."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from blocks.core.errors import Corruption, InvalidArgument
from blocks.search import ExactIndex, Metric
from blocks.search.contract import check_search
from blocks.search.vectors import brute_force

METRICS = list(Metric)


@st.composite
def corpus_and_queries(draw: st.DrawFn, *, integers: bool) -> tuple[np.ndarray, ...]:
    dim = draw(st.integers(1, 6))
    n = draw(st.integers(0, 40))
    nq = draw(st.integers(1, 5))
    if integers:  # small integers make every L2/IP distance exact, so ties are real ties
        elements = st.integers(-2, 2).map(float)
    else:
        elements = st.floats(-10, 10, allow_nan=False, width=32)
    corpus = draw(hnp.arrays(np.float32, (n, dim), elements=elements))
    queries = draw(hnp.arrays(np.float32, (nq, dim), elements=elements))
    corpus[np.abs(corpus).sum(axis=1) == 0] = 1.0  # cosine refuses zero vectors
    queries[np.abs(queries).sum(axis=1) == 0] = 1.0
    ids = np.array(draw(st.permutations(range(200)))[:n], dtype=np.int64)
    return ids, corpus, queries


def _model(ids: np.ndarray, corpus: np.ndarray) -> dict[int, np.ndarray]:
    return dict(zip(ids.tolist(), corpus, strict=True))


@given(
    data=corpus_and_queries(integers=True),
    metric=st.sampled_from(METRICS),
    k=st.one_of(st.integers(1, 3), st.integers(1, 50)),
    corpus_tile=st.integers(1, 40),
    query_tile=st.integers(1, 4),
)
def test_exact_equals_brute_force_with_ties(data, metric, k, corpus_tile, query_tile) -> None:
    ids, corpus, queries = data
    index = ExactIndex(corpus.shape[1], metric, corpus_tile=corpus_tile, query_tile=query_tile)
    index.add(ids, corpus)
    result = index.search(queries, k)
    check_search(result, _model(ids, corpus), queries, k, metric, exact=True)


@given(
    data=corpus_and_queries(integers=False), metric=st.sampled_from(METRICS), k=st.integers(1, 45)
)
def test_exact_matches_brute_force_on_floats(data, metric, k) -> None:
    ids, corpus, queries = data
    index = ExactIndex(corpus.shape[1], metric, corpus_tile=8)
    index.add(ids, corpus)
    result = index.search(queries, k)
    check_search(result, _model(ids, corpus), queries, k, metric, exact=False, tolerance=1e-4)
    assert ((result.ids >= 0).sum(axis=1) == min(k, len(ids))).all()


def test_all_tied_corpus_orders_by_id() -> None:
    index = ExactIndex(3, "l2", corpus_tile=4)
    ids = np.array([50, 7, 31, 2, 99, 13, 8, 41, 5, 77])
    index.add(ids, np.ones((10, 3), dtype=np.float32))
    result = index.search(np.zeros((1, 3)), 6)
    assert result.ids[0].tolist() == sorted(ids.tolist())[:6]
    assert np.allclose(result.distances, 3.0)


def test_ties_inside_one_large_tile_break_by_id() -> None:
    rng = np.random.default_rng(8)
    ids = rng.permutation(100_000)[:3000]
    corpus = rng.integers(0, 2, size=(3000, 2)).astype(np.float32)  # four distinct points
    for metric in (Metric.L2, Metric.IP):
        index = ExactIndex(2, metric, corpus_tile=4096)
        index.add(ids, corpus)
        queries = np.array([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]], dtype=np.float32)
        result = index.search(queries, 5)
        check_search(result, _model(ids, corpus), queries, 5, metric, exact=True)


def test_k_larger_than_index_pads() -> None:
    for metric in METRICS:
        index = ExactIndex(2, metric)
        index.add([4, 9], [[1.0, 0.0], [0.0, 1.0]])
        result = index.search([[1.0, 0.5]], 5)
        assert result.ids[0, 2:].tolist() == [-1, -1, -1]
        assert np.all(result.distances[0, 2:] == metric.worst)


def test_removed_ids_never_come_back_and_readd_works() -> None:
    rng = np.random.default_rng(3)
    index = ExactIndex(8, "ip", corpus_tile=10)
    vectors = rng.normal(size=(100, 8)).astype(np.float32)
    index.add(np.arange(100), vectors)
    assert index.remove(np.arange(0, 100, 2)) == 50
    assert index.remove([0, 1000]) == 0
    result = index.search(vectors, 100)
    assert not np.isin(result.ids, np.arange(0, 100, 2)).any()
    assert (result.ids[:, 50:] == -1).all()
    index.add([0], vectors[:1])
    assert index.search(vectors[:1], 1).ids[0, 0] == 0
    check_search(
        index.search(vectors[:5], 10),
        {**_model(np.arange(1, 100, 2), vectors[1::2]), 0: vectors[0]},
        vectors[:5],
        10,
        Metric.IP,
        exact=False,
    )


def test_filters_allow_list_and_predicate() -> None:
    index = ExactIndex(2, "l2")
    index.add(np.arange(10), np.arange(20, dtype=np.float32).reshape(10, 2))
    assert index.search([[0.0, 0.0]], 3, filter=[7, 3]).ids[0].tolist() == [3, 7, -1]
    odd = index.search([[0.0, 0.0]], 2, filter=lambda ids: ids % 2 == 1)
    assert odd.ids[0].tolist() == [1, 3]
    assert index.search([[0.0, 0.0]], 2, filter=[]).ids[0].tolist() == [-1, -1]
    with pytest.raises(InvalidArgument):
        index.search([[0.0, 0.0]], 2, filter=lambda ids: np.ones(3, dtype=bool))


def test_save_load_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(60, 5)).astype(np.float32)
    index = ExactIndex(5, "cosine")
    index.add(np.arange(60) * 3, vectors)
    index.remove([0, 3])
    path = str(tmp_path / "exact.idx")
    index.save(path)
    fresh = ExactIndex(5, "cosine")
    fresh.load(path)
    assert len(fresh) == 58
    before, after = index.search(vectors[:7], 9), fresh.search(vectors[:7], 9)
    assert np.array_equal(before.ids, after.ids)
    assert np.allclose(before.distances, after.distances, atol=1e-6)
    with pytest.raises(InvalidArgument):
        ExactIndex(5, "l2").load(path)
    with pytest.raises(InvalidArgument):
        ExactIndex(6, "cosine").load(path)
    bad = tmp_path / "bad.idx"
    bad.write_bytes((tmp_path / "exact.idx").read_bytes()[:100])
    target = ExactIndex(5, "cosine")
    target.add([1], vectors[:1])
    with pytest.raises(Corruption):
        target.load(str(bad))
    assert len(target) == 1
    assert not any(name.startswith(".tmp-") for name in os.listdir(tmp_path))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda ix: ix.add([1], [[1.0, 2.0]]), "dimension"),
        (lambda ix: ix.add([1, 2], [[1.0, 2.0, float("nan")]] * 2), "NaN"),
        (lambda ix: ix.add([1, 1], np.ones((2, 3))), "repeat"),
        (lambda ix: ix.add([5], np.ones((1, 3))), "already present"),
        (lambda ix: ix.add([-1], np.ones((1, 3))), ">= 0"),
        (lambda ix: ix.add([1, 2], np.ones((1, 3))), "2 ids for 1"),
        (lambda ix: ix.add([1.5], np.ones((1, 3))), "integers"),
        (lambda ix: ix.add([1], np.ones((1, 1, 3))), "2-D"),
        (lambda ix: ix.add([1], [["a", "b", "c"]]), "numeric"),
        (lambda ix: ix.search(np.ones((1, 3)), 0), "k must"),
        (lambda ix: ix.search(np.ones((1, 3)), 10_001), "k must"),
        (lambda ix: ix.search(np.ones((1, 3)), True), "k must"),
        (lambda ix: ix.search(np.ones((1, 4)), 1), "dimension"),
        (lambda ix: ix.search([[np.inf, 0, 0]], 1), "NaN"),
        (lambda ix: ix.add([1], [[1e300, 0.0, 0.0]]), "float32's range"),
        (lambda ix: ix.search([[0.0, -1e39, 0.0]], 1), "float32's range"),
    ],
)
@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_bad_input_is_refused_and_changes_nothing(call, message) -> None:
    index = ExactIndex(3, "l2")
    index.add([5], [[1.0, 2.0, 3.0]])
    with pytest.raises(InvalidArgument, match=message):
        call(index)
    assert len(index) == 1
    assert index.search([[1.0, 2.0, 3.0]], 2).ids[0].tolist() == [5, -1]


def test_bad_construction() -> None:
    with pytest.raises(InvalidArgument):
        ExactIndex(0)
    with pytest.raises(InvalidArgument):
        ExactIndex(4, "hamming")
    with pytest.raises(InvalidArgument):
        ExactIndex(4, dtype="int8")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidArgument, match="CUDA"):
            ExactIndex(4, device="cuda")
    with pytest.raises(InvalidArgument):
        ExactIndex(4, "cosine").add([1], [[0.0, 0.0, 0.0, 0.0]])


def test_torch_tensors_are_accepted() -> None:
    index = ExactIndex(4, "ip")
    index.add(torch.arange(3), torch.eye(3, 4))
    result = index.search(torch.tensor([[0.0, 2.0, 0.0, 0.0]]), 1)
    assert result.ids[0, 0] == 1 and result.distances[0, 0] == pytest.approx(2.0)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_reduced_precision_path_keeps_high_recall(dtype: str) -> None:
    """The GPU path's dtypes, run on the CPU: rounding may reorder near-ties only."""
    rng = np.random.default_rng(5)
    corpus = rng.normal(size=(2000, 32)).astype(np.float32)
    queries = rng.normal(size=(20, 32)).astype(np.float32)
    for metric in METRICS:
        index = ExactIndex(32, metric, dtype=dtype, device="auto", corpus_tile=512)
        index.add(np.arange(2000), corpus)
        got = index.search(queries, 10).ids
        want, _ = brute_force(np.arange(2000), corpus, queries, 10, metric)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want, strict=True)])
        assert recall >= 0.9, (metric, recall)


def test_a_cosine_query_of_subnormal_entries_is_normalised_to_unit_length() -> None:
    """Found by ``test_exact_matches_brute_force_on_floats``: ``[1e-45, 1e-45]`` has a float64
    norm of 1.98e-45, which rounds to 1.4e-45 in float32, so a float32 division left the row
    of length 1.41 and its score 1.41 instead of 1.0."""
    index = ExactIndex(2, "cosine")
    index.add(np.array([0]), np.array([[1.0, 1.0]], dtype=np.float32))
    result = index.search(np.array([[1e-45, 1e-45]], dtype=np.float32), 1)
    assert result.ids.tolist() == [[0]]
    assert abs(float(result.distances[0, 0]) - 1.0) < 1e-6
