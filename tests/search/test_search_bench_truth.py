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
