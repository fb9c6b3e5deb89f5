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

Each row is an ``array('q')`` of int64 cells, so that ``add_many`` updates it in place through
a numpy view with ``np.add.at`` (``blocks.counters.bulk``). Totals are bounded by
``TOTAL_MAX``, so no cell can overflow. (Plain lists of ints made single adds about a quarter
faster, but a batch then had to add its sums back one Python int at a time, which cost
three times the hashing.)

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
from array import array
from collections.abc import Iterable
from typing import Any

import xxhash

from blocks.core.errors import InvalidArgument
from blocks.counters.bulk import CHUNK_ITEMS_MAX, count_min_columns, numpy_or_none

__all__ = [
    "CELLS_MAX",
    "TOP_K_MAX",
    "TOTAL_MAX",
    "CountMinSketch",
    "TopK",
    "check_shape",
    "item_bytes",
]

CELLS_MAX = 1 << 24
TOP_K_MAX = 10_000
TOTAL_MAX = (1 << 63) - 1
"""Largest total count a sketch holds: every cell is at most the total, so the int64 cells
never overflow; an add or merge that would pass it raises ``InvalidArgument``."""
_MASK_64 = (1 << 64) - 1
_xxh3_128 = xxhash.xxh3_128_intdigest
_BULK_ITEMS_MIN = 32
"""Below this many items ``add_many`` adds one by one (numpy's fixed cost would dominate)."""


def item_bytes(item: bytes | str) -> bytes:
    """An item as the bytes its hashes read: ``str`` as UTF-8; ``InvalidArgument`` for
    anything but bytes and str."""
    if isinstance(item, str):
        return item.encode()
    if isinstance(item, bytes):
        return item
    raise InvalidArgument(f"items are bytes or str, got {type(item).__name__}")


def check_shape(
    width: int, depth: int, seed: int, *, cells_max: int = CELLS_MAX, prefix: str = ""
) -> None:
    """``InvalidArgument`` unless ``width`` and ``depth`` are positive ints with at most
    ``cells_max`` cells and ``seed`` an unsigned 64-bit int: the shape of a sketch, here or
    kept elsewhere (``prefix`` is how the caller's parameters are named: ``cms_``)."""
    if not isinstance(width, int) or not isinstance(depth, int) or width < 1 or depth < 1:
        raise InvalidArgument(f"{prefix}width and {prefix}depth must be positive ints")
    if width * depth > cells_max:
        raise InvalidArgument(f"{prefix}width * {prefix}depth must be at most {cells_max}")
    if not isinstance(seed, int) or not 0 <= seed < (1 << 64):
        raise InvalidArgument("seed must be an unsigned 64-bit int")


class CountMinSketch:
    """A Count-Min sketch over non-negative counts. Not thread-safe."""

    __slots__ = ("_depth", "_rows", "_seed", "_total", "_width")

    def __init__(self, width: int = 2048, depth: int = 5, *, seed: int = 0) -> None:
        check_shape(width, depth, seed)
        self._width = width
        self._depth = depth
        self._seed = seed
        self._rows = [array("q", bytes(8 * width)) for _ in range(depth)]
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
        digest = _xxh3_128(item.encode() if item.__class__ is str else item_bytes(item), self._seed)
        return digest & _MASK_64, (digest >> 64) | 1

    def add(self, item: bytes | str, count: int = 1) -> int:
        """Add ``count`` (>= 0) occurrences of ``item``; returns its new estimate."""
        if count.__class__ is not int and (not isinstance(count, int) or isinstance(count, bool)):
            raise InvalidArgument(f"count must be a non-negative int, got {count!r}")
        if count < 0:
            raise InvalidArgument(f"count must be a non-negative int, got {count!r}")
        # _hashes, inlined: this is the single-item hot path.
        digest = _xxh3_128(item.encode() if item.__class__ is str else item_bytes(item), self._seed)
        total = self._total + count
        if total > TOTAL_MAX:
            raise InvalidArgument(f"the sketch's total would pass {TOTAL_MAX}")
        # Columns (first + r * second) % width, walked in small ints: both reduced once.
        width = self._width
        column, step = (digest & _MASK_64) % width, ((digest >> 64) | 1) % width
        estimate = total
        for row in self._rows:
            value = row[column] + count
            row[column] = value
            if value < estimate:
                estimate = value
            column += step
            if column >= width:
                column -= width
        self._total = total
        return estimate

    def add_many(self, items: Iterable[bytes | str], counts: Iterable[int] | None = None) -> None:
        """``add(item, count)`` for each item (``count`` 1 when ``counts`` is None), with the
        same cells as adding them one by one.

        Vectorised (``blocks.counters.bulk``) when numpy is installed and the batch is not
        tiny; otherwise a plain loop. Counts are checked before anything is added; a bad item
        raises ``InvalidArgument`` and leaves the items before it in its chunk of
        ``CHUNK_ITEMS_MAX`` either all added or none.
        """
        item_list = items if type(items) is list else list(items)
        if counts is None:
            count_list = None
            added = len(item_list)
        else:
            count_list = list(counts)
            if len(count_list) != len(item_list):
                raise InvalidArgument("items and counts must have the same length")
            for count in count_list:
                if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                    raise InvalidArgument(f"count must be a non-negative int, got {count!r}")
            added = sum(count_list)
        if self._total + added > TOTAL_MAX:
            raise InvalidArgument(f"the sketch's total would pass {TOTAL_MAX}")
        np = numpy_or_none()
        if np is None or len(item_list) < _BULK_ITEMS_MIN:
            for index, item in enumerate(item_list):
                self.add(item, 1 if count_list is None else count_list[index])
            return
        for start in range(0, len(item_list), CHUNK_ITEMS_MAX):
            chunk = (
                item_list
                if start == 0 and len(item_list) <= CHUNK_ITEMS_MAX
                else item_list[start : start + CHUNK_ITEMS_MAX]
            )
            columns = count_min_columns(np, chunk, self._seed, self._width, self._depth, item_bytes)
            amounts: Any = 1
            if count_list is not None:
                amounts = np.asarray(count_list[start : start + len(chunk)], dtype=np.int64)
            for number, row in enumerate(self._rows):
                np.add.at(np.frombuffer(row, dtype=np.int64), columns[number], amounts)
            self._total += len(chunk) if count_list is None else int(amounts.sum())

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
        if self._total + other._total > TOTAL_MAX:
            raise InvalidArgument(f"the merged total would pass {TOTAL_MAX}")
        for mine, theirs in zip(self._rows, other._rows, strict=True):
            for column, value in enumerate(theirs):
                if value:
                    mine[column] += value
        self._total += other._total

    def copy(self) -> CountMinSketch:
        clone = CountMinSketch(self._width, self._depth, seed=self._seed)
        clone._rows = [array("q", row) for row in self._rows]
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
