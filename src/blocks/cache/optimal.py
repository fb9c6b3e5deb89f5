"""Bélády's optimal replacement (MIN): the ceiling for any policy on a known trace.

Theory of operation: with the whole future known, the best victim is the resident key whose
next use is furthest away (or never). One backward pass computes, for each position, the
position of the next request for the same key; a forward pass keeps residents in a max-heap
keyed by next use. Heap items go stale when a key is used again (its next use moves); they
are recognised by comparing with the key's current next use and skipped. O(n log n) time,
O(n) memory for the next-use array.

Optimal here means *for unit weights and demand paging* (every miss is admitted). The
simulator reports it next to the policies so that hit ratios can be read as a fraction of the
attainable.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Sequence

from blocks.cache.lru import check_capacity

__all__ = ["next_uses", "optimal_hit_ratio", "optimal_hits"]


def next_uses(trace: Sequence[Hashable]) -> list[int]:
    """For each position i, the next position of ``trace[i]``'s key, or ``len(trace)``."""
    never = len(trace)
    following = [never] * never
    last_seen: dict[Hashable, int] = {}
    for position in range(never - 1, -1, -1):
        key = trace[position]
        following[position] = last_seen.get(key, never)
        last_seen[key] = position
    return following


def optimal_hits(trace: Sequence[Hashable], capacity: int) -> int:
    """Hits Bélády's MIN gets on ``trace`` with room for ``capacity`` unit-weight keys."""
    check_capacity(capacity)
    following = next_uses(trace)
    resident: dict[Hashable, int] = {}  # key -> its next use
    heap: list[tuple[int, int]] = []  # (-next use, position that set it)
    hits = 0
    for position, key in enumerate(trace):
        next_use = following[position]
        if key in resident:
            hits += 1
        elif len(resident) >= capacity:
            while True:
                negative_use, origin = heapq.heappop(heap)
                victim = trace[origin]
                if resident.get(victim) == -negative_use:
                    del resident[victim]
                    break
        resident[key] = next_use
        heapq.heappush(heap, (-next_use, position))
    return hits


def optimal_hit_ratio(trace: Sequence[Hashable], capacity: int) -> float:
    """``optimal_hits`` as a fraction of the trace length (0.0 for an empty trace)."""
    return optimal_hits(trace, capacity) / len(trace) if trace else 0.0
