"""The vector-search contract: ``VectorIndex``, metrics and results.

Theory of operation: a vector index maps caller-chosen 64-bit integer ids to float vectors of a
fixed dimension and answers batched k-nearest-neighbour queries under one metric. Every
implementation (exact torch search, FAISS indexes, a sharded index over local or remote shards)
speaks this one protocol, so a caller can swap them and ``blocks.search.contract`` can check
any of them against a brute-force model.

Distances and ordering. ``search`` returns, per query, up to ``k`` ids ordered best first:

* ``Metric.L2``: squared Euclidean distance, smaller is better;
* ``Metric.IP``: inner product, larger is better;
* ``Metric.COSINE``: cosine similarity, larger is better (vectors are normalised on the way in,
  so zero vectors are refused).

Exact implementations break ties by smaller id first, so their answers are deterministic;
approximate ones make no promise about ties. When fewer than ``k`` vectors qualify, the row is
padded with id ``-1`` and the worst possible distance (``+inf`` for L2, ``-inf`` otherwise).

Input rules shared by every implementation (see ``blocks.search.vectors``): vectors are 2-D
float arrays (numpy, or torch tensors) of the index's dimension with only finite values; ids
are non-negative int64 values, unique within one call; ``k`` is in ``1..K_MAX``. A call that
breaks a rule raises ``InvalidArgument`` and changes nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = [
    "K_MAX",
    "DimensionAndMetric",
    "Filter",
    "FloatArray",
    "IdArray",
    "Metric",
    "SearchResult",
    "VectorIndex",
]

K_MAX = 10_000
"""Largest ``k`` a single search may ask for."""

FloatArray = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int64]

Filter = Callable[[IdArray], npt.NDArray[np.bool_]] | Sequence[int] | IdArray
"""Which ids may appear in a result: an allow-list of ids, or a predicate that maps an array
of ids to a boolean mask of the same shape (evaluated once per search over the stored ids)."""


class Metric(enum.StrEnum):
    """How closeness is measured; see the module docstring for each direction."""

    L2 = "l2"
    IP = "ip"
    COSINE = "cosine"

    @property
    def higher_is_better(self) -> bool:
        return self is not Metric.L2

    @property
    def worst(self) -> float:
        """The padding distance for empty result slots."""
        return float("-inf") if self.higher_is_better else float("inf")

    @classmethod
    def parse(cls, value: str | Metric) -> Metric:
        from blocks.core.errors import InvalidArgument

        try:
            return cls(str(value).lower())
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise InvalidArgument(f"unknown metric {value!r}; expected one of {names}") from None


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Per-query ids and distances, shape ``(num_queries, k)``, best first.

    Unpacks as ``ids, distances = index.search(...)``. ``partial`` is true only when a sharded
    search was allowed to answer without every shard (``missing_shards`` gives their
    positions; a coordinator over named shards also gives ``missing_shard_names``).
    """

    ids: IdArray
    distances: FloatArray
    partial: bool = False
    missing_shards: tuple[int, ...] = ()
    missing_shard_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        assert self.ids.shape == self.distances.shape, (self.ids.shape, self.distances.shape)
        assert self.ids.ndim == 2

    def __iter__(self) -> Iterator[Any]:
        yield self.ids
        yield self.distances


class DimensionAndMetric:
    """``dim`` and ``metric``, fixed when an index is built: read-only properties over the
    ``_dim`` and ``_metric`` its constructor sets. Every index class shares them from here."""

    _dim: int
    _metric: Metric

    @property
    def dim(self) -> int:
        """Dimension of every stored vector."""
        return self._dim

    @property
    def metric(self) -> Metric:
        """The metric distances are measured in."""
        return self._metric


@runtime_checkable
class VectorIndex(Protocol):
    """A mutable k-nearest-neighbour index over ``(id, vector)`` pairs.

    Implementations are safe to *search* from several threads at once; mutations (``add``,
    ``remove``, ``load``) must not run concurrently with anything else on the same index.
    """

    @property
    def dim(self) -> int:
        """Dimension of every stored vector."""
        ...

    @property
    def metric(self) -> Metric:
        """The metric distances are measured in."""
        ...

    def __len__(self) -> int:
        """Number of live (added and not removed) vectors."""
        ...

    def add(self, ids: Any, vectors: Any) -> None:
        """Store ``vectors[i]`` under ``ids[i]``.

        Raises ``InvalidArgument`` (and stores nothing) for a wrong shape or dimension, a
        non-finite value, a negative or repeated id within the call, or an id already present;
        ``FailedPrecondition`` if the index needs training first.
        """
        ...

    def remove(self, ids: Any) -> int:
        """Remove the given ids; unknown ids are ignored. Returns how many were removed.

        A removed id never appears in a later search result, until it is added again.
        """
        ...

    def search(self, queries: Any, k: int, filter: Filter | None = None) -> SearchResult:
        """The ``k`` best ids per query row, best first, restricted to ``filter`` if given.

        Raises ``InvalidArgument`` for a wrong query shape or dimension, non-finite values, or
        ``k`` outside ``1..K_MAX``.
        """
        ...

    def save(self, path: str) -> None:
        """Write the whole index to one file at ``path`` (replaced atomically)."""
        ...

    def load(self, path: str) -> None:
        """Replace this index's contents with a file written by ``save`` of the same class.

        Raises ``InvalidArgument`` when the file's dimension or metric differ from this
        index's, ``Corruption`` when the file cannot be decoded.
        """
        ...
