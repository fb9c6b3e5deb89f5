"""Count-Min sketch with top-k heavy hitters: approximate counts for trending keys.

Theory of operation
-------------------
A ``depth x width`` table of counters. Adding ``item`` with ``count`` raises one counter per
row, at a column chosen by that row's hash (double hashing from one 128-bit xxh3 digest:
``h1 + row * h2``). The estimate is the minimum over the rows. Counters only collect extra
mass from colliding items, so the estimate never underestimates; with ``width = ceil(e/eps)``
and ``depth = ceil(ln(1/delta))`` it overestimates by more than ``eps * N`` (``N`` the total
added) with probability at most ``delta`` (Cormode and Muthukrishnan, 2005). ``from_error``
builds a sketch from ``(eps, delta)``.

Two sketches with the same shape and seed merge by adding tables cell by cell: the result is
exactly the sketch of the combined stream.

``TopK`` keeps at most ``k`` candidate keys beside a sketch. After each add, the item's
estimate is compared with the smallest candidate's; a larger one takes its place. Merging two
``TopK`` merges their sketches and re-ranks the union of their candidates by the merged
estimates. Heavy hitters (items above ``N/k``) are found; the order among light items is not
promised.
"""

from __future__ import annotations

import math

import xxhash

from blocks.core.errors import InvalidArgument

__all__ = ["CELLS_MAX", "TOP_K_MAX", "CountMinSketch", "TopK"]

CELLS_MAX = 1 << 24
TOP_K_MAX = 10_000
_MASK_64 = (1 << 64) - 1


def _as_bytes(item: bytes | str) -> bytes:
    if isinstance(item, str):
        return item.encode()
    if isinstance(item, bytes):
        return item
    raise InvalidArgument(f"items are bytes or str, got {type(item).__name__}")


class CountMinSketch:
    """A Count-Min sketch over non-negative counts. Not thread-safe."""

    __slots__ = ("_depth", "_rows", "_seed", "_total", "_width")

    def __init__(self, width: int = 2048, depth: int = 5, *, seed: int = 0) -> None:
        if not isinstance(width, int) or not isinstance(depth, int) or width < 1 or depth < 1:
            raise InvalidArgument("width and depth must be positive ints")
        if width * depth > CELLS_MAX:
            raise InvalidArgument(f"width * depth must be at most {CELLS_MAX}")
        if not isinstance(seed, int) or not 0 <= seed < (1 << 64):
            raise InvalidArgument("seed must be an unsigned 64-bit int")
        self._width = width
        self._depth = depth
        self._seed = seed
        self._rows = [[0] * width for _ in range(depth)]
        self._total = 0

    @classmethod
    def from_error(cls, eps: float, delta: float, *, seed: int = 0) -> CountMinSketch:
        """A sketch whose overestimate exceeds ``eps * total`` with probability <= ``delta``."""
        if not 0 < eps < 1 or not 0 < delta < 1:
            raise InvalidArgument("eps and delta must be in (0, 1)")
        return cls(math.ceil(math.e / eps), math.ceil(math.log(1 / delta)), seed=seed)

    @property
    def width(self) -> int:
        return self._width

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def total(self) -> int:
        """Sum of all counts added (``N`` in the error bound)."""
        return self._total

    @property
    def eps(self) -> float:
        return math.e / self._width

    @property
    def delta(self) -> float:
        return math.exp(-self._depth)

    def _hashes(self, item: bytes | str) -> tuple[int, int]:
        """Double hashing: row ``r`` uses column ``(first + r * second) % width``."""
        digest = xxhash.xxh3_128_intdigest(_as_bytes(item), self._seed)
        return digest & _MASK_64, (digest >> 64) | 1

    def add(self, item: bytes | str, count: int = 1) -> int:
        """Add ``count`` (>= 0) occurrences of ``item``; returns its new estimate."""
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise InvalidArgument(f"count must be a non-negative int, got {count!r}")
        position, step = self._hashes(item)
        width = self._width
        estimate = -1
        for row in self._rows:
            column = position % width
            value = row[column] + count
            row[column] = value
            if estimate < 0 or value < estimate:
                estimate = value
            position += step
        self._total += count
        return estimate

    def estimate(self, item: bytes | str) -> int:
        """An upper bound on ``item``'s true count, tight with high probability."""
        position, step = self._hashes(item)
        width = self._width
        estimate = -1
        for row in self._rows:
            value = row[position % width]
            if estimate < 0 or value < estimate:
                estimate = value
            position += step
        return estimate

    def merge(self, other: CountMinSketch) -> None:
        """Add ``other``'s table into this one: the sketch of both streams together."""
        if not isinstance(other, CountMinSketch):
            raise InvalidArgument(f"cannot merge {type(other).__name__} into a CountMinSketch")
        if (other._width, other._depth, other._seed) != (self._width, self._depth, self._seed):
            raise InvalidArgument("only sketches with the same width, depth and seed merge")
        for mine, theirs in zip(self._rows, other._rows, strict=True):
            for column, value in enumerate(theirs):
                if value:
                    mine[column] += value
        self._total += other._total

    def copy(self) -> CountMinSketch:
        clone = CountMinSketch(self._width, self._depth, seed=self._seed)
        clone._rows = [list(row) for row in self._rows]
        clone._total = self._total
        return clone


class TopK:
    """The ``k`` items with the largest estimated counts, over a ``CountMinSketch``."""

    __slots__ = ("_candidates", "_k", "sketch")

    def __init__(self, k: int, sketch: CountMinSketch | None = None) -> None:
        if not isinstance(k, int) or not 0 < k <= TOP_K_MAX:
            raise InvalidArgument(f"k must be in [1, {TOP_K_MAX}]")
        self._k = k
        self.sketch = sketch or CountMinSketch()
        # item -> its estimate when last seen; bounded by k.
        self._candidates: dict[bytes | str, int] = {}

    @property
    def k(self) -> int:
        return self._k

    def add(self, item: bytes | str, count: int = 1) -> None:
        estimate = self.sketch.add(item, count)
        self._offer(item, estimate)

    def _offer(self, item: bytes | str, estimate: int) -> None:
        candidates = self._candidates
        if item in candidates or len(candidates) < self._k:
            candidates[item] = estimate
            return
        weakest = min(candidates, key=candidates.__getitem__)
        if estimate > candidates[weakest]:
            del candidates[weakest]
            candidates[item] = estimate

    def top(self, n: int | None = None) -> list[tuple[bytes | str, int]]:
        """Up to ``n`` (default ``k``) items with current estimates, largest first."""
        ranked = sorted(
            ((item, self.sketch.estimate(item)) for item in self._candidates),
            key=lambda pair: (-pair[1], str(pair[0])),
        )
        return ranked[: self._k if n is None else max(0, n)]

    def merge(self, other: TopK) -> None:
        """Fold in ``other`` (same k and sketch shape): its stream now counts here too."""
        if not isinstance(other, TopK) or other._k != self._k:
            raise InvalidArgument("only TopK trackers with the same k merge")
        self.sketch.merge(other.sketch)
        union = set(self._candidates) | set(other._candidates)
        ranked = sorted(union, key=lambda item: (-self.sketch.estimate(item), str(item)))
        self._candidates = {item: self.sketch.estimate(item) for item in ranked[: self._k]}
