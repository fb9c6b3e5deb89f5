"""The vector-index contract's distance tolerance follows the vectors' magnitude.

Found by ``test_exact_matches_brute_force_on_floats``: two identical float32 vectors of norm
about 20 came back 1.2e-4 apart (a few ulps of their squared norm, float32 GEMM rounding),
and the check allowed 1e-4 because it scaled the tolerance by the *distances* (0 here)."""

from __future__ import annotations

import numpy as np
import pytest

from blocks.search import ExactIndex
from blocks.search.api import Metric, SearchResult
from blocks.search.contract import check_search

CORPUS = np.array(
    [
        [8.246094, 9.047511, 8.246094, 8.246094, 8.246094, 8.246094],
        [0.0, 8.246094, 8.246094, 8.246094, 8.246094, 8.246094],
    ],
    dtype=np.float32,
)


def test_identical_large_vectors_pass_the_exact_check() -> None:
    index = ExactIndex(6, "l2")
    index.add(np.array([0, 1]), CORPUS)
    result = index.search(CORPUS, 1)
    check_search(result, {0: CORPUS[0], 1: CORPUS[1]}, CORPUS, 1, Metric.L2, exact=True)


def test_a_distance_off_by_more_than_rounding_still_fails() -> None:
    wrong = SearchResult(
        ids=np.array([[0], [1]]), distances=np.array([[0.5], [0.0]], dtype=np.float32)
    )
    with pytest.raises(AssertionError):
        check_search(wrong, {0: CORPUS[0], 1: CORPUS[1]}, CORPUS, 1, Metric.L2, exact=True)
