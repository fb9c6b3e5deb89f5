"""Order statistics every benchmark reports, in one place: the min / median / max of rounds
and the nearest-rank percentiles of latencies.

Pure: no I/O, no clock. ``benchmarks.harness`` re-exports both; ``_sweep_core`` (pure too)
imports them from here.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

__all__ = ["min_median_max", "percentile"]


def min_median_max(values: Sequence[float]) -> tuple[float, float, float]:
    """The smallest, the median and the largest of ``values`` (at least one).

    The median of an even count is the mean of the two middle values (``statistics.median``),
    not the upper-middle one that ``sorted(values)[len(values) // 2]`` picks.
    """
    if not values:
        raise ValueError("min_median_max of no values")
    return min(values), statistics.median(values), max(values)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (any order): the smallest value with at least
    ``fraction`` (0..1) of them at or below it; ``nan`` for none.

    Every benchmark's p50 and p99 use this one (``int(fraction * n)`` as an index, which two
    copies used, is a rank too high where ``fraction * n`` is whole: the p99 of 100 samples was
    their maximum, the p50 of an even count the upper-middle one).
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = math.ceil(fraction * len(ordered))
    return ordered[min(len(ordered) - 1, max(0, rank - 1))]
