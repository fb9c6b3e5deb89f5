"""Adaptive Replacement Cache (Megiddo and Modha, FAST 2003), generalised to weights.

Theory of operation: residents live in two LRU lists, T1 (seen once recently) and T2 (seen at
least twice). Two *ghost* lists, B1 and B2, remember the keys recently evicted from T1 and T2
(keys only, no values). A miss that hits ghost B1 says "T1 was too small", so the target size
``p`` of T1 grows; a hit in B2 shrinks it. ``_replace`` evicts from T1 when T1 is above its
target and from T2 otherwise, moving the victim to the matching ghost list.

With every weight equal to 1 this follows the paper's pseudocode case by case (the tests
compare it with a literal transcription). With weights, sizes are measured in weight, each
adaptation step is scaled by the weight of the key, and room is made in a loop. Ghost lists
keep ``|T1|+|B1| <= c`` and ``|T1|+|T2|+|B1|+|B2| <= 2c``, so memory stays bounded by 2c keys.
ARC is scan-resistant (a scan only churns T1) but, unlike TinyLFU, has no memory of
frequencies beyond its ghosts.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from blocks.cache.lru import check_capacity

__all__ = ["ArcPolicy"]


class ArcPolicy:
    """ARC over keys with integer weights."""

    __slots__ = ("_b1", "_b1w", "_b2", "_b2w", "_capacity", "_t1", "_t1w", "_t2", "_t2w", "p")
    name = "arc"

    def __init__(self, capacity: int) -> None:
        self._capacity = check_capacity(capacity)
        self._t1: OrderedDict[Hashable, int] = OrderedDict()
        self._t2: OrderedDict[Hashable, int] = OrderedDict()
        self._b1: OrderedDict[Hashable, int] = OrderedDict()
        self._b2: OrderedDict[Hashable, int] = OrderedDict()
        self._t1w = self._t2w = self._b1w = self._b2w = 0
        self.p: float = 0.0
        """Target weight of T1, in [0, capacity]."""

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def weight(self) -> int:
        return self._t1w + self._t2w

    def __len__(self) -> int:
        return len(self._t1) + len(self._t2)

    def __contains__(self, key: object) -> bool:
        return key in self._t1 or key in self._t2

    def access(self, key: Hashable) -> None:
        if key in self._t2:
            self._t2.move_to_end(key)
            return
        weight = self._t1.pop(key)
        self._t1w -= weight
        self._t2[key] = weight
        self._t2w += weight

    def _replace(self, key_in_b2: bool, evicted: list[Hashable]) -> None:
        t1w = self._t1w
        take_t1 = bool(self._t1) and (t1w > self.p or (key_in_b2 and t1w == self.p))
        if take_t1 or not self._t2:
            victim, weight = self._t1.popitem(last=False)
            self._t1w -= weight
            self._b1[victim] = weight
            self._b1w += weight
        else:
            victim, weight = self._t2.popitem(last=False)
            self._t2w -= weight
            self._b2[victim] = weight
            self._b2w += weight
        evicted.append(victim)

    def _drop_b1(self) -> None:
        self._b1w -= self._b1.popitem(last=False)[1]

    def _drop_b2(self) -> None:
        self._b2w -= self._b2.popitem(last=False)[1]

    def insert(self, key: Hashable, weight: int) -> list[Hashable]:
        assert key not in self and 1 <= weight <= self._capacity
        capacity = self._capacity
        evicted: list[Hashable] = []
        in_b2 = False
        if key in self._b1:
            ratio = self._b2w / self._b1w if self._b1w < self._b2w else 1.0
            self.p = min(self.p + ratio * weight, float(capacity))
            self._b1w -= self._b1.pop(key)
            target = self._t2
        elif key in self._b2:
            in_b2 = True
            ratio = self._b1w / self._b2w if self._b2w < self._b1w else 1.0
            self.p = max(self.p - ratio * weight, 0.0)
            self._b2w -= self._b2.pop(key)
            target = self._t2
        else:
            target = self._t1
            if self._t1w + self._b1w + weight > capacity:
                while self._b1 and self._t1w + self._b1w + weight > capacity:
                    self._drop_b1()
                while self._t1w + weight > capacity:
                    victim, victim_weight = self._t1.popitem(last=False)
                    self._t1w -= victim_weight
                    evicted.append(victim)
            else:
                while self._b2 and self._total() + weight > 2 * capacity:
                    self._drop_b2()
        while self._t1w + self._t2w + weight > capacity:
            self._replace(in_b2, evicted)
        target[key] = weight
        if target is self._t1:
            self._t1w += weight
        else:
            self._t2w += weight
        self._trim_ghosts()
        return evicted

    def _total(self) -> int:
        return self._t1w + self._t2w + self._b1w + self._b2w

    def _trim_ghosts(self) -> None:
        # No-ops with unit weights (the paper's cases keep both bounds); needed with weights.
        capacity = self._capacity
        while self._b1 and self._t1w + self._b1w > capacity:
            self._drop_b1()
        while self._b2 and self._total() > 2 * capacity:
            self._drop_b2()
        while self._b1 and self._total() > 2 * capacity:
            self._drop_b1()

    def remove(self, key: Hashable) -> None:
        if key in self._t1:
            self._t1w -= self._t1.pop(key)
        else:
            self._t2w -= self._t2.pop(key)

    def request(self, key: Hashable) -> bool:
        if key in self._t1 or key in self._t2:
            self.access(key)
            return True
        self.insert(key, 1)
        return False

    def lists(self) -> tuple[list[Hashable], list[Hashable], list[Hashable], list[Hashable]]:
        """(T1, T2, B1, B2), each LRU first (for tests and introspection)."""
        return list(self._t1), list(self._t2), list(self._b1), list(self._b2)
