"""Seeded synthetic data for tests, benchmarks and demos: clustered vectors and short texts.

Theory of operation: real embedding sets are clustered, and approximate indexes behave very
differently on clustered data than on uniform noise (where every method's recall collapses),
so tests and benchmarks use a Gaussian mixture: ``clusters`` centres drawn with spread
``center_scale``, points around them with unit variance. ``sentences`` builds short English
sentences from a fixed vocabulary of topics, for BM25, typeahead and MiniLM runs that need a
text corpus without a download. Everything depends only on the seed.
"""

from __future__ import annotations

import numpy as np

from blocks.core.errors import InvalidArgument
from blocks.search.api import FloatArray

__all__ = ["clustered_vectors", "sentences"]


def clustered_vectors(
    n: int,
    dim: int,
    *,
    clusters: int = 64,
    seed: int = 0,
    center_scale: float = 4.0,
    queries: int = 0,
) -> tuple[FloatArray, FloatArray]:
    """``(corpus (n, dim), queries (queries, dim))`` from one Gaussian mixture."""
    if n < 0 or dim < 1 or clusters < 1 or queries < 0:
        raise InvalidArgument("need n >= 0, dim >= 1, clusters >= 1, queries >= 0")
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)).astype(np.float32) * np.float32(center_scale)

    def draw(count: int) -> FloatArray:
        out = np.empty((count, dim), dtype=np.float32)
        step = 65_536  # bounded temporaries for large n
        for start in range(0, count, step):
            size = min(step, count - start)
            labels = rng.integers(0, clusters, size=size)
            noise = rng.standard_normal(size=(size, dim), dtype=np.float32)
            out[start : start + size] = centers[labels] + noise
        return out

    return draw(n), draw(queries)


_TOPICS: dict[str, tuple[list[str], list[str]]] = {
    "space": (
        ["rocket", "orbit", "astronaut", "telescope", "planet", "galaxy", "moon", "satellite"],
        ["launched", "observed", "circled", "landed on", "photographed", "explored"],
    ),
    "cooking": (
        ["soup", "bread", "pasta", "oven", "garlic", "recipe", "kitchen", "sauce"],
        ["baked", "stirred", "seasoned", "tasted", "simmered", "served"],
    ),
    "finance": (
        ["market", "stock", "bank", "interest rate", "investor", "bond", "budget", "inflation"],
        ["fell", "rose", "traded", "borrowed", "invested in", "reported"],
    ),
    "sports": (
        ["team", "goal", "match", "coach", "stadium", "player", "league", "referee"],
        ["won", "lost", "scored in", "trained for", "played", "cheered"],
    ),
    "computing": (
        ["server", "database", "network", "compiler", "cache", "processor", "query", "cluster"],
        ["crashed", "indexed", "compiled", "replicated", "cached", "restarted"],
    ),
}
_SUBJECTS = ["the engineer", "a student", "my neighbour", "the team", "an old friend", "the city"]


def sentences(n: int, *, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` seeded sentences and the topic of each."""
    if n < 0:
        raise InvalidArgument("n must be >= 0")
    rng = np.random.default_rng(seed)
    topics = sorted(_TOPICS)
    texts: list[str] = []
    labels: list[str] = []
    for _ in range(n):
        topic = topics[int(rng.integers(len(topics)))]
        nouns, verbs = _TOPICS[topic]
        subject = _SUBJECTS[int(rng.integers(len(_SUBJECTS)))]
        first, second = rng.choice(len(nouns), size=2, replace=False)
        verb = verbs[int(rng.integers(len(verbs)))]
        texts.append(f"{subject} {verb} the {nouns[first]} near the {nouns[second]}")
        labels.append(topic)
    return texts, labels
