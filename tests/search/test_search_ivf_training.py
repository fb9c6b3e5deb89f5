"""IVF training: faiss's k-means from k-means++ seeds (``coarse.train_quantizer``)."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from blocks.core.errors import InvalidArgument
from blocks.search import FaissIndex, Metric
from blocks.search.coarse import (
    kmeans_plus_plus,
    read_centroids,
    train_centroids,
    trains_own_quantizer,
)
from blocks.search.synthetic import clustered_vectors
from blocks.search.vectors import as_vectors


def _centroids(index: FaissIndex) -> np.ndarray:
    ivf = faiss.extract_index_ivf(index._index)
    return read_centroids(faiss.downcast_index(ivf.quantizer))


def _truth(corpus: np.ndarray, queries: np.ndarray) -> np.ndarray:
    base, asked = corpus.astype(np.float64), queries.astype(np.float64)
    squared = (asked**2).sum(1)[:, None] - 2.0 * asked @ base.T + (base**2).sum(1)[None, :]
    return np.argpartition(squared, 9, axis=1)[:, :10]


def _recall_and_scanned(search, truth: np.ndarray) -> tuple[float, float]:
    faiss.cvar.indexIVF_stats.reset()
    ids = search()
    scanned = faiss.cvar.indexIVF_stats.ndis / len(truth)
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(ids, truth, strict=True))
    return hits / truth.size, scanned


def test_kmeans_plus_plus_is_seeded_and_finds_every_separated_cluster() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 8)).astype(np.float32) * 100.0
    noise = rng.normal(size=(600, 8)).astype(np.float32) * np.float32(0.01)
    sample = np.repeat(centres, 30, axis=0) + noise
    seeds = kmeans_plus_plus(sample, 20, seed=7)
    assert np.array_equal(seeds, kmeans_plus_plus(sample, 20, seed=7))
    nearest = ((seeds[:, None, :] - centres[None, :, :]) ** 2).sum(-1).argmin(axis=1)
    # Squared distances within a cluster ~1e-3, across >= 1.6e4: a second draw from a covered
    # cluster has odds ~1e-5 a draw; 20 uniform draws hit 20 equal clusters with odds 20!/20^20.
    assert sorted(nearest.tolist()) == list(range(20))


def test_kmeans_plus_plus_on_repeated_rows_and_bad_counts() -> None:
    sample = np.ones((10, 4), dtype=np.float32)
    assert kmeans_plus_plus(sample, 3, seed=0).shape == (3, 4)
    with pytest.raises(InvalidArgument):
        kmeans_plus_plus(sample, 11, seed=0)


def test_only_untrained_cpu_ivf_over_a_flat_quantizer_is_trained_here() -> None:
    assert trains_own_quantizer(faiss.index_factory(8, "IVF4,Flat"))
    assert trains_own_quantizer(faiss.index_factory(8, "IVF4,PQ2", faiss.METRIC_INNER_PRODUCT))
    assert not trains_own_quantizer(faiss.index_factory(8, "Flat"))
    assert not trains_own_quantizer(faiss.index_factory(8, "PCA4,IVF4,Flat"))
    assert not trains_own_quantizer(faiss.index_factory(8, "IVF4_HNSW8,Flat"))


@pytest.mark.parametrize("metric", [Metric.L2, Metric.COSINE])
def test_our_ivf_trains_the_shared_centroids_not_faisss_default(metric: Metric) -> None:
    corpus, _ = clustered_vectors(2000, 16, clusters=32, seed=2)
    index = FaissIndex(16, "IVF64,Flat", metric)
    index.train(corpus)
    ours = _centroids(index)
    sample = as_vectors(corpus, 16, metric=metric)  # what ``train`` trains on
    assert np.array_equal(ours, train_centroids(sample, 64, metric))
    raw = faiss.index_factory(16, "IVF64,Flat", index._inner.metric_type)
    raw.train(sample)
    assert not np.array_equal(ours, read_centroids(faiss.downcast_index(raw.quantizer)))
    if metric is Metric.COSINE:  # spherical k-means, as faiss's inner-product IVF
        assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_ivf_pq_still_trains_its_codes_over_our_centroids() -> None:
    corpus, queries = clustered_vectors(1000, 16, clusters=16, seed=4, queries=20)
    index = FaissIndex(16, "IVF16,PQ4x4", Metric.L2)
    index.train(corpus)
    index.add(np.arange(len(corpus)), corpus)
    assert index.is_trained and len(index) == len(corpus)
    assert (index.search(queries, 5, nprobe=16).ids >= 0).all()


def test_kmeans_plus_plus_seeds_scan_fewer_vectors_at_no_less_recall() -> None:
    """Clustered data with two lists per cluster (the benchmark's 20k set has 2.2): faiss's
    uniform start leaves clusters without a centroid, so its lists are uneven and a probe
    scans more. Seeded data and faiss's fixed k-means seed: deterministic."""
    corpus, queries = clustered_vectors(6000, 64, clusters=128, seed=3, queries=200)
    truth = _truth(corpus, queries)
    ours = FaissIndex(64, "IVF256,Flat")
    ours.train(corpus)
    ours.add(np.arange(len(corpus)), corpus)
    raw = faiss.index_factory(64, "IVF256,Flat")
    raw.train(corpus)
    raw.add(corpus)
    for nprobe in (2, 3):
        params = faiss.SearchParametersIVF(nprobe=nprobe)
        our_recall, our_scanned = _recall_and_scanned(
            lambda n=nprobe: ours.search(queries, 10, nprobe=n).ids, truth
        )
        raw_recall, raw_scanned = _recall_and_scanned(
            lambda p=params: raw.search(queries, 10, params=p)[1], truth
        )
        assert our_recall >= raw_recall
        assert our_scanned < raw_scanned
