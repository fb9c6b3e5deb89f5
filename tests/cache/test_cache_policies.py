"""Each eviction policy against an independent reference, on generated small cases."""

from __future__ import annotations

import itertools
import random
from collections.abc import Hashable
from functools import cache

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.cache import ArcPolicy, LfuPolicy, LruPolicy, TinyLfuPolicy
from blocks.cache.api import EvictionPolicy
from blocks.cache.optimal import next_uses, optimal_hits
from blocks.cache.workloads import recency_trace
from blocks.core.errors import InvalidArgument

# An operation: ("ref", key, weight) touches the key (access if resident, else insert with
# weight); ("del", key, 0) removes it when resident.
OPS = st.lists(
    st.tuples(st.sampled_from(["ref", "ref", "ref", "del"]), st.integers(0, 9), st.integers(1, 3)),
    max_size=120,
)


class ReferenceLru:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.order: list[tuple[int, int]] = []  # (key, weight), oldest first

    def ref(self, key: int, weight: int) -> list[int]:
        for index, (resident, _) in enumerate(self.order):
            if resident == key:
                self.order.append(self.order.pop(index))
                return []
        self.order.append((key, weight))
        evicted = []
        while sum(w for _, w in self.order) > self.capacity:
            evicted.append(self.order.pop(0)[0])
        return evicted

    def delete(self, key: int) -> None:
        self.order = [(k, w) for k, w in self.order if k != key]


class ReferenceLfu:
    """Victim: the smallest (count, time the count was reached); room made before inserting."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.entries: dict[int, list[int]] = {}  # key -> [count, tick, weight]
        self.tick = 0

    def ref(self, key: int, weight: int) -> list[int]:
        self.tick += 1
        if key in self.entries:
            self.entries[key][0] += 1
            self.entries[key][1] = self.tick
            return []
        evicted = []
        while sum(e[2] for e in self.entries.values()) + weight > self.capacity:
            victim = min(self.entries, key=lambda k: (self.entries[k][0], self.entries[k][1]))
            del self.entries[victim]
            evicted.append(victim)
        self.entries[key] = [1, self.tick, weight]
        return evicted

    def delete(self, key: int) -> None:
        self.entries.pop(key, None)


def drive(policy: EvictionPolicy, key: int, weight: int) -> list[Hashable]:
    if key in policy:
        policy.access(key)
        return []
    return policy.insert(key, weight)


@given(capacity=st.integers(1, 6), ops=OPS)
def test_lru_matches_reference(capacity: int, ops: list[tuple[str, int, int]]) -> None:
    policy, reference = LruPolicy(capacity), ReferenceLru(capacity)
    for op, key, weight in ops:
        weight = min(weight, capacity)
        if op == "del":
            if key in policy:
                policy.remove(key)
            reference.delete(key)
            continue
        assert drive(policy, key, weight) == reference.ref(key, weight)
        assert policy.victims_in_order() == [k for k, _ in reference.order]
        assert policy.weight == sum(w for _, w in reference.order) <= capacity


@given(capacity=st.integers(1, 6), ops=OPS)
def test_lfu_matches_reference(capacity: int, ops: list[tuple[str, int, int]]) -> None:
    policy, reference = LfuPolicy(capacity), ReferenceLfu(capacity)
    for op, key, weight in ops:
        weight = min(weight, capacity)
        if op == "del":
            if key in policy:
                policy.remove(key)
            reference.delete(key)
            continue
        assert drive(policy, key, weight) == reference.ref(key, weight)
        expected = sorted(reference.entries, key=lambda k: tuple(reference.entries[k][:2]))
        assert policy.victims_in_order() == expected
        for resident in expected:
            assert policy.frequency(resident) == reference.entries[resident][0]


class PaperArc:
    """A literal transcription of ARC(c) from Megiddo and Modha's Figure 4 (unit sizes)."""

    def __init__(self, c: int) -> None:
        self.c, self.p = c, 0.0
        self.t1: list[int] = []
        self.t2: list[int] = []
        self.b1: list[int] = []
        self.b2: list[int] = []

    def replace(self, x: int) -> None:
        if self.t1 and ((x in self.b2 and len(self.t1) == self.p) or len(self.t1) > self.p):
            self.b1.append(self.t1.pop(0))
        else:
            self.b2.append(self.t2.pop(0))

    def ref(self, x: int) -> bool:
        c = self.c
        if x in self.t1 or x in self.t2:  # case I
            (self.t1 if x in self.t1 else self.t2).remove(x)
            self.t2.append(x)
            return True
        if x in self.b1:  # case II
            delta = 1 if len(self.b1) >= len(self.b2) else len(self.b2) / len(self.b1)
            self.p = min(self.p + delta, c)
            self.replace(x)
            self.b1.remove(x)
            self.t2.append(x)
            return False
        if x in self.b2:  # case III
            delta = 1 if len(self.b2) >= len(self.b1) else len(self.b1) / len(self.b2)
            self.p = max(self.p - delta, 0)
            self.replace(x)
            self.b2.remove(x)
            self.t2.append(x)
            return False
        l1, total = len(self.t1) + len(self.b1), len(self.t1 + self.t2 + self.b1 + self.b2)
        if l1 == c:  # case IV.A
            if len(self.t1) < c:
                self.b1.pop(0)
                self.replace(x)
            else:
                self.t1.pop(0)
        elif l1 < c and total >= c:  # case IV.B
            if total == 2 * c:
                self.b2.pop(0)
            self.replace(x)
        self.t1.append(x)
        return False


@given(capacity=st.integers(1, 6), keys=st.lists(st.integers(0, 14), max_size=200))
def test_arc_matches_the_paper_with_unit_weights(capacity: int, keys: list[int]) -> None:
    policy, paper = ArcPolicy(capacity), PaperArc(capacity)
    for key in keys:
        assert policy.request(key) == paper.ref(key)
        assert policy.lists() == (paper.t1, paper.t2, paper.b1, paper.b2)
        assert policy.p == paper.p


@pytest.mark.parametrize("factory", [LruPolicy, LfuPolicy, ArcPolicy, TinyLfuPolicy])
@given(capacity=st.integers(1, 12), ops=OPS)
def test_every_policy_keeps_its_books(
    factory: type[LruPolicy], capacity: int, ops: list[tuple[str, int, int]]
) -> None:
    """Residency reported by insert/remove matches a set model; weight never exceeds capacity."""
    policy = factory(capacity)
    resident: dict[int, int] = {}
    for op, key, weight in ops:
        weight = min(weight, capacity)
        if op == "del":
            if key in resident:
                policy.remove(key)
                del resident[key]
        elif key in resident:
            policy.access(key)
        else:
            evicted = policy.insert(key, weight)
            resident[key] = weight
            for victim in evicted:
                del resident[victim]
        assert all(k in policy for k in resident) and len(policy) == len(resident)
        assert policy.weight == sum(resident.values()) <= capacity


def test_tinylfu_prefers_frequent_keys_over_a_scan() -> None:
    policy = TinyLfuPolicy(100, adaptive=False, rng=random.Random(1))
    hot = list(range(50))
    for _ in range(20):
        for key in hot:
            policy.request(key)
    for key in range(1000, 5000):  # a one-pass scan four times the cache
        policy.request(key)
    assert sum(key in policy for key in hot) >= 45


def test_tinylfu_climber_grows_the_window_on_a_recency_trace() -> None:
    policy = TinyLfuPolicy(200, rng=random.Random(2))
    assert policy.window_max == 2
    for key in recency_trace(60_000, random.Random(3)):
        policy.request(key)
    assert policy.window_max > 20


@pytest.mark.parametrize("factory", [LruPolicy, LfuPolicy, ArcPolicy, TinyLfuPolicy])
@pytest.mark.parametrize("capacity", [0, -3, 2.5, True])
def test_bad_capacity_is_refused(factory: type[LruPolicy], capacity: object) -> None:
    with pytest.raises(InvalidArgument):
        factory(capacity)  # type: ignore[arg-type]


def brute_force_optimal(trace: tuple[int, ...], capacity: int) -> int:
    """Most hits any eviction choice achieves (exhaustive search; tiny traces only)."""

    @cache
    def best(position: int, resident: frozenset[int]) -> int:
        if position == len(trace):
            return 0
        key = trace[position]
        if key in resident:
            return 1 + best(position + 1, resident)
        if len(resident) < capacity:
            return best(position + 1, resident | {key})
        return max(best(position + 1, (resident - {victim}) | {key}) for victim in resident)

    return best(0, frozenset())


@given(
    capacity=st.integers(1, 3),
    trace=st.lists(st.integers(0, 5), max_size=14).map(tuple),
)
def test_belady_matches_exhaustive_search(capacity: int, trace: tuple[int, ...]) -> None:
    assert optimal_hits(trace, capacity) == brute_force_optimal(trace, capacity)


def test_next_uses() -> None:
    assert next_uses(["a", "b", "a", "c", "b"]) == [2, 4, 5, 5, 5]
    assert next_uses([]) == []


def test_optimal_is_a_ceiling() -> None:
    rng = random.Random(5)
    trace = [int(rng.paretovariate(1.2)) % 300 for _ in range(5000)]
    for capacity in (10, 50):
        ceiling = optimal_hits(trace, capacity)
        for factory in (LruPolicy, LfuPolicy, ArcPolicy, TinyLfuPolicy):
            policy = factory(capacity)
            assert sum(policy.request(key) for key in trace) <= ceiling


def test_lfu_tie_break_example() -> None:
    policy = LfuPolicy(2)
    for key in ["a", "b", "a", "b"]:
        policy.request(key)  # a and b both reach count 2; a first
    assert policy.insert("c", 1) == ["a"]
    assert list(itertools.islice(policy.victims_in_order(), 3)) == ["c", "b"]


def test_trial_climber_moves_the_window_and_bad_options_are_refused() -> None:
    policy = TinyLfuPolicy(100, climber="trial", rng=random.Random(0))
    trace = recency_trace(20_000, random.Random(3))
    windows = set()
    for key in trace:
        policy.request(key)
        windows.add(policy.window_max)
    assert len(windows) > 3 and policy.weight <= 100
    with pytest.raises(InvalidArgument):
        TinyLfuPolicy(10, climber="annealing")
    with pytest.raises(InvalidArgument):
        TinyLfuPolicy(10, window_fraction=0.0)
    with pytest.raises(InvalidArgument):
        TinyLfuPolicy(10, step_fraction=0.0)


def test_fixed_window_stays_fixed() -> None:
    policy = TinyLfuPolicy(1000, adaptive=False, window_fraction=0.05)
    for key in recency_trace(20_000, random.Random(3)):
        policy.request(key)
    assert policy.window_max == 50
