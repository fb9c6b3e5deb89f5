"""Metadata filters applied during the search, checked against brute force; hybrid fusion."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blocks.core.errors import InvalidArgument
from blocks.search.api import Metric
from blocks.search.exact import ExactIndex
from blocks.search.faiss_index import FaissIndex
from blocks.search.filtered import search_filtered
from blocks.search.hybrid import reciprocal_rank_fusion
from blocks.search.metadata import And, Eq, Expression, In, MetadataStore, Not, Or, Range
from blocks.search.service import SearchNode
from blocks.search.vectors import brute_force

COLORS = ["red", "green", "blue"]


def matches(attributes: dict[str, Any], expression: Expression) -> bool:
    """The model: an expression evaluated on one id's attributes, by definition."""
    if isinstance(expression, Eq):
        value = attributes.get(expression.field)
        return (
            value is not None
            and type(value) is type(expression.value)
            and value == expression.value
        )
    if isinstance(expression, In):
        return any(matches(attributes, Eq(expression.field, v)) for v in expression.values)
    if isinstance(expression, Range):
        value = attributes.get(expression.field)
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
        low_ok = expression.low is None or (
            value >= expression.low if expression.low_inclusive else value > expression.low
        )
        high_ok = expression.high is None or (
            value <= expression.high if expression.high_inclusive else value < expression.high
        )
        return low_ok and high_ok
    if isinstance(expression, And):
        return all(matches(attributes, part) for part in expression.parts)
    if isinstance(expression, Or):
        return any(matches(attributes, part) for part in expression.parts)
    assert isinstance(expression, Not)
    return not matches(attributes, expression.part)


leaves = st.one_of(
    st.builds(Eq, st.just("color"), st.sampled_from(COLORS)),
    st.builds(Eq, st.just("price"), st.integers(0, 9)),
    st.builds(In, st.just("color"), st.frozensets(st.sampled_from(COLORS), max_size=2)),
    st.builds(
        Range,
        st.just("price"),
        st.none() | st.integers(0, 9),
        st.none() | st.integers(0, 9),
        st.booleans(),
        st.booleans(),
    ),
)
expressions = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.builds(And, st.tuples(inner, inner)),
        st.builds(Or, st.tuples(inner, inner)),
        st.builds(Not, inner),
    ),
    max_leaves=4,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    expression=expressions,
    k=st.integers(1, 12),
    metric=st.sampled_from(list(Metric)),
)
def test_exact_filtered_search_equals_brute_force_over_the_matching_ids(
    seed: int, expression: Expression, k: int, metric: Metric
) -> None:
    rng = np.random.default_rng(seed)
    n = 60
    vectors = rng.normal(size=(n, 4)).astype(np.float32)
    attributes = [
        {"color": COLORS[rng.integers(3)], "price": int(rng.integers(10))}
        if rng.random() > 0.1
        else {}
        for _ in range(n)
    ]
    store = MetadataStore()
    for item, attrs in enumerate(attributes):
        store.put(item, attrs)
    allowed = store.allowed_ids(expression)
    expected_ids = [i for i in range(n) if matches(attributes[i], expression)]
    assert allowed.tolist() == expected_ids
    index = ExactIndex(4, metric)
    index.add(np.arange(n), vectors)
    queries = rng.normal(size=(3, 4)).astype(np.float32)
    got = search_filtered(index, queries, k, allowed).result
    keep = np.array(expected_ids, dtype=np.int64)
    want_ids, want_distances = brute_force(keep, vectors[keep], queries, k, metric)
    assert got.ids.tolist() == want_ids.tolist()  # k results whenever k ids match
    found = want_ids >= 0
    np.testing.assert_allclose(got.distances[found], want_distances[found], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("spec", ["HNSW32", "IVF16,Flat"])
def test_approximate_search_returns_k_when_a_selective_filter_has_k(spec: str) -> None:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(2000, 8)).astype(np.float32)
    index = FaissIndex(8, spec, "l2", nprobe=1, ef_search=16)
    if spec.startswith("IVF"):
        index.train(vectors)
    index.add(np.arange(2000), vectors)
    allowed = np.arange(0, 2000, 97)  # 21 ids spread over the space: 1%
    queries = rng.normal(size=(20, 8)).astype(np.float32)
    plain = index.search(queries, 10, allowed, nprobe=1, ef_search=16)
    filtered = search_filtered(index, queries, 10, allowed, nprobe=1, ef_search=16)
    assert filtered.short_rows == 0
    assert ((filtered.result.ids >= 0).sum(axis=1) == 10).all()
    assert set(filtered.result.ids.ravel().tolist()) <= set(allowed.tolist())
    if spec.startswith("IVF"):  # one probed list of 16 cannot hold 10 of 21 spread ids
        assert ((plain.ids >= 0).sum(axis=1) < 10).any() and filtered.retries > 0


def test_metadata_rejects_bad_input_and_changes_nothing() -> None:
    store = MetadataStore()
    store.put(1, {"color": "red", "price": 3})
    with pytest.raises(InvalidArgument):
        store.put(1, {"color": float("nan")})
    with pytest.raises(InvalidArgument):
        store.put(-1, {})
    with pytest.raises(InvalidArgument):
        Range("price", low="cheap")  # type: ignore[arg-type]
    assert store.get(1) == {"color": "red", "price": 3}
    assert store.allowed_ids(Eq("price", True)).tolist() == []  # a bool is not the number 1
    assert store.delete(1) and store.allowed_ids(Eq("color", "red")).tolist() == []


def test_reciprocal_rank_fusion() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "a", "d"]], 3, k_rrf=60)
    assert [doc for doc, _ in fused] == ["a", "c", "b"]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)
    assert reciprocal_rank_fusion([["x", "x", "y"]], 5, k_rrf=0) == [("x", 1.0), ("y", 1 / 3)]
    with pytest.raises(InvalidArgument):
        reciprocal_rank_fusion([["a"]], 0)


class WordEmbedder:
    """A stand-in embedder: one dimension per known word (no model download)."""

    words = ["cat", "kitten", "dog", "puppy", "car"]
    dim = len(words)

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.full((len(texts), self.dim), 1e-3, dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                if word in self.words:
                    out[row, self.words.index(word)] += 1.0
                if word == "kitten":  # a kitten means a cat: what BM25 cannot know
                    out[row, 0] += 1.0
        return out


def test_hybrid_mode_fuses_bm25_and_meaning() -> None:
    node = SearchNode(ExactIndex(4, "l2"), embedder=WordEmbedder())
    node.index_documents([("d1", "a kitten sleeps"), ("d2", "the cat naps"), ("d3", "car")])
    lexical = [doc for doc, _, _ in node.search_text("cat", 3, "bm25")]
    hybrid = [doc for doc, _, _ in node.search_text("cat", 3, "hybrid")]
    assert lexical == ["d2"]  # BM25 alone misses the kitten
    assert hybrid[:2] == ["d2", "d1"]
    with pytest.raises(InvalidArgument):
        SearchNode(ExactIndex(4, "l2")).search_text("cat", 3, "hybrid")
