"""Least-frequently-used eviction with O(1) operations.

Theory of operation (after Shah, Mitra and Matani's constant-time LFU): keys are grouped into
buckets by access count; each bucket is an insertion-ordered dict, and the buckets form a
doubly linked list in increasing count, threaded through two dicts (``_next``/``_prev``) with
a sentinel count 0 at the head. A hit moves a key from bucket f to bucket f+1, creating f+1
right after f when needed and unlinking f when it empties; the victim is the oldest key of the
first bucket. No step searches, so every operation is O(1).

Ties among the least frequent keys are broken by recency: the key that reached that count
earliest goes first. Counts start at 1 on insertion and are forgotten on eviction (in-cache
LFU). Room is made *before* a new key is inserted, so a newcomer (count 1) is never its own
victim. LFU wins on stable skewed popularity and loses when popularity shifts, because old
heavy hitters never age out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from blocks.cache.lru import WeightedPolicy

__all__ = ["LfuPolicy"]

_HEAD = 0


class LfuPolicy(WeightedPolicy):
    """Constant-time LFU over keys with integer weights."""

    __slots__ = ("_buckets", "_count", "_next", "_prev")
    name = "lfu"

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self._count: dict[Hashable, int] = {}
        self._buckets: dict[int, OrderedDict[Hashable, int]] = {}
        self._next: dict[int, int] = {_HEAD: _HEAD}
        self._prev: dict[int, int] = {_HEAD: _HEAD}

    def __len__(self) -> int:
        return len(self._count)

    def __contains__(self, key: object) -> bool:
        return key in self._count

    def frequency(self, key: Hashable) -> int:
        """Access count of a resident key (0 if absent)."""
        return self._count.get(key, 0)

    def _link_after(self, existing: int, count: int) -> None:
        following = self._next[existing]
        self._next[existing] = count
        self._prev[count] = existing
        self._next[count] = following
        self._prev[following] = count
        self._buckets[count] = OrderedDict()

    def _unlink(self, count: int) -> None:
        before, after = self._prev.pop(count), self._next.pop(count)
        self._next[before] = after
        self._prev[after] = before
        del self._buckets[count]

    def access(self, key: Hashable) -> None:
        count = self._count[key]
        bucket = self._buckets[count]
        weight = bucket.pop(key)
        higher = count + 1
        if self._next[count] != higher:
            self._link_after(count, higher)
        self._buckets[higher][key] = weight
        self._count[key] = higher
        if not bucket:
            self._unlink(count)

    def _evict_one(self) -> Hashable:
        lowest = self._next[_HEAD]
        assert lowest != _HEAD, "evicting from an empty LFU"
        bucket = self._buckets[lowest]
        victim, weight = bucket.popitem(last=False)
        if not bucket:
            self._unlink(lowest)
        del self._count[victim]
        self._weight -= weight
        return victim

    def insert(self, key: Hashable, weight: int) -> list[Hashable]:
        assert key not in self._count and 1 <= weight <= self._capacity
        evicted: list[Hashable] = []
        while self._weight + weight > self._capacity:
            evicted.append(self._evict_one())
        if self._next[_HEAD] != 1:
            self._link_after(_HEAD, 1)
        self._buckets[1][key] = weight
        self._count[key] = 1
        self._weight += weight
        return evicted

    def remove(self, key: Hashable) -> None:
        count = self._count.pop(key)
        bucket = self._buckets[count]
        self._weight -= bucket.pop(key)
        if not bucket:
            self._unlink(count)

    def request(self, key: Hashable) -> bool:
        if key in self._count:
            self.access(key)
            return True
        self.insert(key, 1)
        return False

    def victims_in_order(self) -> list[Hashable]:
        """Resident keys, next victim first (for tests and introspection)."""
        order: list[Hashable] = []
        count = self._next[_HEAD]
        while count != _HEAD:
            order.extend(self._buckets[count])
            count = self._next[count]
        return order
