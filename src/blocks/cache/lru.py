"""Least-recently-used eviction.

Theory of operation: one insertion-ordered dict maps key to weight. A hit moves the key to the
end; eviction pops from the front. Every operation is O(1). LRU is the right default for
recency-heavy workloads and the worst choice for loops larger than the cache and for scans,
where it evicts exactly the keys about to be reused.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

from blocks.core.errors import InvalidArgument

__all__ = ["LruPolicy", "WeightedPolicy", "check_capacity"]


def check_capacity(capacity: int) -> int:
    """Validate a capacity given by a user: an int >= 1."""
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise InvalidArgument(f"capacity must be an integer >= 1, got {capacity!r}")
    return capacity


class WeightedPolicy:
    """What every policy with one weight counter reports: its ``capacity`` (checked) and
    ``weight``, the sum of its resident keys' weights, which the subclass keeps in
    ``_weight`` (0 when empty)."""

    __slots__ = ("_capacity", "_weight")

    def __init__(self, capacity: int) -> None:
        self._capacity = check_capacity(capacity)
        self._weight = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def weight(self) -> int:
        return self._weight


class LruPolicy(WeightedPolicy):
    """LRU over keys with integer weights."""

    __slots__ = ("_order",)
    name = "lru"

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self._order: OrderedDict[Hashable, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, key: object) -> bool:
        return key in self._order

    def access(self, key: Hashable) -> None:
        self._order.move_to_end(key)

    @property
    def access_function(self) -> Callable[[Hashable], None]:
        """``access`` without a Python frame: the ordered dict's own ``move_to_end``."""
        return self._order.move_to_end

    def insert(self, key: Hashable, weight: int) -> list[Hashable]:
        assert key not in self._order and 1 <= weight <= self._capacity
        order = self._order
        order[key] = weight
        self._weight += weight
        evicted: list[Hashable] = []
        while self._weight > self._capacity:
            victim, victim_weight = order.popitem(last=False)
            self._weight -= victim_weight
            evicted.append(victim)
        return evicted

    def remove(self, key: Hashable) -> None:
        self._weight -= self._order.pop(key)

    def request(self, key: Hashable) -> bool:
        order = self._order
        if key in order:
            order.move_to_end(key)
            return True
        order[key] = 1
        self._weight += 1
        while self._weight > self._capacity:
            self._weight -= order.popitem(last=False)[1]
        return False

    def victims_in_order(self) -> list[Hashable]:
        """Resident keys, next victim first (for tests and introspection)."""
        return list(self._order)
