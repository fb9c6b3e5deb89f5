"""The benchmark's ground truth and recall: float64 brute force, independent of our indexes."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.search import brute_force_truth, recall_at_k


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_truth_matches_a_full_sort(metric: str) -> None:
    rng = np.random.default_rng(7)
    corpus = rng.normal(size=(300, 8)).astype(np.float32)
    queries = rng.normal(size=(20, 8)).astype(np.float32)
    truth = brute_force_truth(corpus, queries, metric, 5, query_chunk=7)
    base, asked = corpus.astype(np.float64), queries.astype(np.float64)
    for row, query in enumerate(asked):
        if metric == "l2":
            score = ((base - query) ** 2).sum(axis=1)
        elif metric == "ip":
            score = -(base @ query)
        else:
            score = -(base @ query) / np.linalg.norm(base, axis=1) / np.linalg.norm(query)
        assert set(truth[row].tolist()) == set(np.argsort(score)[:5].tolist())


def test_recall_counts_hits_as_sets_and_padding_never_hits() -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 9, -1], [-1, -1, -1, -1]])
    assert recall_at_k(found, truth) == 2 / 8
    assert recall_at_k(truth[:, ::-1], truth) == 1.0


def test_lancedb_rows_are_regrouped_by_query_and_padded() -> None:
    from benchmarks._search_peers import rows_by_query

    # LanceDB answers one row per hit, best first within a query, queries interleaved.
    query_index = np.array([1, 0, 1, 0, 1])
    ids = np.array([10, 20, 11, 21, 12])
    out = rows_by_query(query_index, ids, rows=3, k=2)
    assert out.tolist() == [[20, 21], [10, 11], [-1, -1]]
    assert rows_by_query(np.array([], dtype=np.int64), np.array([]), 1, 2).tolist() == [[-1, -1]]


def test_goal_compares_the_cheapest_points_above_the_floor_round_by_round() -> None:
    from benchmarks.harness import Result
    from benchmarks.search import Point, goal_summary

    def point(contender: str, parameter: str) -> Point:
        return Point(contender, parameter, lambda q: q)

    points = [
        point("ours IVF", "nprobe=1"),  # fastest of ours, but under the floor: not chosen
        point("ours IVF", "nprobe=4"),  # the cheapest above the floor: chosen
        point("ours IVF", "nprobe=8"),  # measured faster in a burst: not chosen
        point("faiss IVF", "nprobe=4"),
        point("usearch", "ef=16"),
        point("torch mm + topk (previous method)", "-"),  # ours, old: never a peer
    ]
    recalls = dict(zip([p.name for p in points], [0.90, 0.97, 0.99, 0.97, 0.96, 1.0], strict=True))
    rounds = {
        points[0].name: [900.0, 900.0, 900.0],
        points[1].name: [300.0, 100.0, 330.0],
        points[2].name: [800.0, 800.0, 800.0],
        points[3].name: [200.0, 200.0, 300.0],
        points[4].name: [150.0, 250.0, 100.0],
        points[5].name: [999.0, 999.0, 999.0],
    }
    results = {
        name: Result("qps", name, throughput=sorted(r)[1], round_throughputs=r)
        for name, r in rounds.items()
    }
    summary = goal_summary(points, recalls, results, 0.95)
    assert summary["ours"] == points[1].name
    assert summary["best_peer"] == points[3].name  # 200 (median) beats usearch's 150
    assert summary["round_ratios"] == [1.5, 0.5, 1.1]
    assert (summary["ratio_min"], summary["ratio"], summary["ratio_max"]) == (0.5, 1.1, 1.5)


def test_raw_cosine_queries_are_normalised_per_call_and_the_callers_array_kept() -> None:
    """The raw faiss contender does a faiss user's per-batch work, ``normalize_L2`` in place,
    on its own copy: every call normalises, and the shared batch is never written."""
    from benchmarks import search

    calls: list[int] = []
    prepare = search.RawCosineQueries()
    real = prepare._normalize

    def counting(rows: np.ndarray) -> None:
        calls.append(len(rows))
        real(rows)

    prepare._normalize = counting
    queries = np.random.default_rng(3).normal(size=(6, 8)).astype(np.float32) * 3
    kept = queries.copy()
    for _ in range(3):
        unit = prepare(queries)
        np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-6)
        assert unit is not queries
    assert calls == [6, 6, 6]
    np.testing.assert_array_equal(queries, kept)
    other = queries[:2].copy()
    assert prepare(other).shape == (2, 8) and calls[-1] == 2
