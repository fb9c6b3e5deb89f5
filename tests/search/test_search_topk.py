"""The tiled top-k kernel itself: slab selection, tie repair, fused GEMM, against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from blocks.search import Metric
from blocks.search.gemm import fused_scores, fused_scores_available
from blocks.search.topk import _tile_bounds, slab_count, tiled_topk
from blocks.search.vectors import brute_force


def _run(ids, corpus, queries, k, metric, *, valid=None, **options):
    corpus_t = torch.from_numpy(corpus)
    with torch.inference_mode():
        distances, got = tiled_topk(
            torch.from_numpy(queries),
            corpus_t,
            (corpus_t * corpus_t).sum(dim=1),
            torch.from_numpy(ids),
            k,
            metric,
            valid=None if valid is None else torch.from_numpy(valid),
            **options,
        )
    return got.numpy(), distances.numpy()


@st.composite
def tied_problem(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    """Integer vectors from a tiny alphabet: many exactly equal scores, wide enough for slabs."""
    dim = draw(st.integers(1, 4))
    n = draw(st.integers(1, 400))
    corpus = draw(hnp.arrays(np.float32, (n, dim), elements=st.integers(-1, 1).map(float)))
    queries = draw(hnp.arrays(np.float32, (3, dim), elements=st.integers(-2, 2).map(float)))
    ids = np.random.default_rng(draw(st.integers(0, 2**16))).permutation(10 * n)[:n]
    return ids.astype(np.int64), corpus, queries


@given(
    problem=tied_problem(),
    metric=st.sampled_from([Metric.L2, Metric.IP]),
    k=st.integers(1, 12),
    corpus_tile=st.sampled_from([16, 64, 96, 128, 256, 1000]),
    slabs=st.booleans(),
    fused=st.booleans(),
    filtered=st.booleans(),
)
def test_kernel_equals_brute_force_under_heavy_ties(
    problem, metric, k, corpus_tile, slabs, fused, filtered
) -> None:
    ids, corpus, queries = problem
    valid = (ids % 3 != 0) if filtered else None
    got_ids, got_dist = _run(
        ids,
        corpus,
        queries,
        k,
        metric,
        valid=valid,
        query_tile=2,
        corpus_tile=corpus_tile,
        slabs=slabs,
        fused=fused,
    )
    keep = np.ones(len(ids), dtype=bool) if valid is None else valid
    want_ids, want_dist = brute_force(ids[keep], corpus[keep], queries, k, metric)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_array_equal(got_dist, want_dist.astype(np.float32))


def test_slab_path_is_taken_by_the_tie_test_shapes() -> None:
    assert slab_count(256, 3) >= 2 and slab_count(96, 1) >= 2
    assert slab_count(16_384, 10) == 16  # slabs of 1024 >= 64 * 11: topk's partial-sort path


@given(width=st.integers(1, 70_000), k=st.integers(1, 10_000))
def test_slab_count_is_valid(width, k) -> None:
    slabs = slab_count(width, k)
    if slabs:
        assert slabs >= 2 and slabs & (slabs - 1) == 0
        assert width % slabs == 0 and width // slabs >= k + 1


@given(
    seed=st.integers(0, 2**16), k=st.integers(1, 20), metric=st.sampled_from([Metric.L2, Metric.IP])
)
def test_duplicated_rows_break_ties_by_id(seed, k, metric) -> None:
    rng = np.random.default_rng(seed)
    # quarter-integer coordinates: every score is exact in float32, so brute force agrees
    base = (rng.integers(-8, 9, size=(300, 8)) / 4).astype(np.float32)
    corpus = np.concatenate([base, base, base[::-1]])  # every vector three times
    ids = rng.permutation(len(corpus)).astype(np.int64)
    queries = (rng.integers(-8, 9, size=(4, 8)) / 4).astype(np.float32)
    got_ids, got_dist = _run(ids, corpus, queries, k, metric, query_tile=4, corpus_tile=256)
    want_ids, want_dist = brute_force(ids, corpus, queries, k, metric)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_array_equal(got_dist, want_dist.astype(np.float32))


def test_fused_and_plain_gemm_agree_on_floats() -> None:
    if not fused_scores_available(torch.zeros(1, 1)):
        pytest.skip("torch has no usable oneDNN matmul here")
    rng = np.random.default_rng(11)
    corpus = rng.normal(size=(5000, 64)).astype(np.float32)
    queries = rng.normal(size=(37, 64)).astype(np.float32)
    ids = np.arange(5000, dtype=np.int64)
    for metric in (Metric.L2, Metric.IP):
        fused_ids, fused_dist = _run(ids, corpus, queries, 10, metric, corpus_tile=2048)
        plain_ids, plain_dist = _run(ids, corpus, queries, 10, metric, fused=False, slabs=False)
        np.testing.assert_array_equal(fused_ids, plain_ids)
        np.testing.assert_allclose(fused_dist, plain_dist, rtol=1e-5, atol=1e-3)
    with torch.inference_mode():
        q, c = torch.from_numpy(queries), torch.from_numpy(corpus)
        bias = torch.from_numpy(rng.normal(size=5000).astype(np.float32))
        assert torch.allclose(fused_scores(q, c, bias), torch.addmm(bias, q, c.T), atol=1e-4)


def test_fused_gemm_is_not_used_for_other_dtypes_or_devices() -> None:
    assert not fused_scores_available(torch.zeros(2, 2, dtype=torch.float16))
    assert not fused_scores_available(torch.zeros(2, 2, dtype=torch.bfloat16))


@given(problem=tied_problem(), k=st.integers(1, 12))
def test_slabs_and_plain_topk_give_identical_answers(problem, k) -> None:
    ids, corpus, queries = problem
    assume(len(ids) > k)
    a = _run(ids, corpus, queries, k, Metric.IP, corpus_tile=128)
    b = _run(ids, corpus, queries, k, Metric.IP, corpus_tile=128, slabs=False)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@given(rows=st.integers(0, 5000), corpus_tile=st.integers(1, 3000))
def test_tile_bounds_cover_the_corpus_in_order(rows, corpus_tile) -> None:
    bounds = list(_tile_bounds(rows, corpus_tile))
    assert [start for start, _ in bounds] == [0, *(stop for _, stop in bounds)][: len(bounds)]
    assert (bounds[-1][1] if bounds else 0) == rows
    assert all(0 < stop - start <= corpus_tile for start, stop in bounds)
    assert all(
        (stop - start) % 64 == 0 or stop - start < 64 or stop - start == corpus_tile
        for start, stop in bounds
    )
