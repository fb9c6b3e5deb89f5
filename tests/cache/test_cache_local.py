"""The cache wrapper: TTL under a ManualClock, sweeping, statistics, weights and bad input."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.cache import (
    ARCCache,
    FrequencySketch,
    LFUCache,
    LRUCache,
    PolicyCache,
    SpaceSaving,
    TinyLFUCache,
    stable_hash,
)
from blocks.cache.local import PUT_SWEEP_ENTRIES
from blocks.core.clock import ManualClock
from blocks.core.errors import InvalidArgument

CACHES = [LRUCache, LFUCache, ARCCache, TinyLFUCache]


@pytest.mark.parametrize("cache_type", CACHES)
def test_expiry_is_exact(cache_type: type[LRUCache[str, str]]) -> None:
    clock = ManualClock(monotonic_s=100.0)
    cache = cache_type(10, clock=clock)
    cache.put("k", "v", ttl=5)
    cache.put("forever", "w")
    clock.advance(ms=4999)
    assert cache.get("k") == "v" and "k" in cache
    clock.advance(ms=1)
    assert "k" not in cache
    assert cache.get("k", "gone") == "gone"
    assert cache.get("forever") == "w"
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.expirations, stats.size) == (2, 1, 1, 1)


def test_sweep_is_bounded_and_earliest_first() -> None:
    clock = ManualClock(monotonic_s=0.0)
    cache: LRUCache[int, int] = LRUCache(100, clock=clock)
    for key in range(10):
        cache.put(key, key, ttl=key + 1)
    clock.advance(6)  # keys 0..5 expired
    assert cache.sweep(4) == 4
    assert len(cache) == 6
    assert cache.sweep(100) == 2
    assert sorted(k for k in range(10) if k in cache) == [6, 7, 8, 9]
    assert cache.stats().expirations == 6


def test_put_sweeps_a_little() -> None:
    clock = ManualClock(monotonic_s=0.0)
    cache: LRUCache[int, int] = LRUCache(100, clock=clock)
    for key in range(10):
        cache.put(key, key, ttl=1)
    clock.advance(2)
    cache.put("fresh", 1)  # type: ignore[arg-type]
    assert len(cache) == 11 - PUT_SWEEP_ENTRIES


def test_deadline_heap_stays_bounded_under_overwrites() -> None:
    clock = ManualClock(monotonic_s=0.0)
    cache: LRUCache[int, int] = LRUCache(10, clock=clock)
    for round_number in range(2000):
        cache.put(round_number % 5, round_number, ttl=1000)
    assert len(cache._deadlines) <= 2 * len(cache) + 64 + 1


def test_weights_count_against_capacity() -> None:
    cache: LRUCache[str, str] = LRUCache(10)
    cache.put("a", "x", weight=4)
    cache.put("b", "x", weight=4)
    cache.put("c", "x", weight=4)  # evicts a
    assert "a" not in cache and cache.weight == 8
    cache.put("b", "y", weight=9)  # reweigh b: evicts c, keeps b
    assert cache.get("b") == "y" and "c" not in cache and cache.weight == 9
    assert cache.stats().evictions == 2


def test_overwriting_an_expired_entry_counts_an_expiration() -> None:
    clock = ManualClock(monotonic_s=0.0)
    cache: LRUCache[str, str] = LRUCache(3, clock=clock)
    cache.put("a", "1", ttl=1)
    clock.advance(1)
    cache.put("a", "2")
    assert cache.get("a") == "2" and cache.stats().expirations == 1


@pytest.mark.parametrize("cache_type", CACHES)
def test_bad_input_changes_nothing(cache_type: type[LRUCache[object, str]]) -> None:
    cache = cache_type(4)
    cache.put("a", "1")
    before = cache.stats()
    for action in (
        lambda: cache.put("a", "2", weight=0),
        lambda: cache.put("a", "2", weight=5),
        lambda: cache.put("a", "2", weight=1.5),  # type: ignore[arg-type]
        lambda: cache.put("a", "2", ttl=-1),
        lambda: cache.put("a", "2", ttl=float("nan")),
        lambda: cache.put("a", "2", ttl="soon"),  # type: ignore[arg-type]
        lambda: cache.put({}, "2"),
        lambda: cache.get([]),
        lambda: cache.delete([]),
        lambda: cache.sweep(-1),
    ):
        with pytest.raises(InvalidArgument):
            action()
    assert cache.stats() == before and cache.get("a") == "1"
    assert [] not in cache


def test_clear_and_delete() -> None:
    cache: ARCCache[str, int] = ARCCache(3)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.delete("a") is True and cache.delete("a") is False
    cache.clear()
    assert len(cache) == 0 and cache.weight == 0
    cache.put("c", 3)
    assert cache.get("c") == 3
    cache.check_invariants()


def test_none_is_a_value() -> None:
    cache: PolicyCache[str, None] = LRUCache(2)
    cache.put("n", None)
    assert cache.get("n", "default") is None
    assert cache.stats().hit_ratio == 1.0
    assert "capacity=2" in repr(cache)


def test_stats_dict() -> None:
    cache: LFUCache[int, int] = LFUCache(1)
    cache.get(1)
    cache.put(1, 1)
    cache.get(1)
    assert cache.stats().as_dict() == {
        "hits": 1,
        "misses": 1,
        "evictions": 0,
        "expirations": 0,
        "size": 1,
        "weight": 1,
        "capacity": 1,
        "hit_ratio": 0.5,
    }


def test_stable_hash_is_stable_and_typed() -> None:
    assert stable_hash(12345) == stable_hash(12345)
    assert stable_hash("k") == stable_hash(b"k")  # str hashes as its UTF-8 bytes
    assert stable_hash(("t", 1)) == stable_hash(("t", 1))
    assert 0 <= stable_hash(-7) < 2**64
    assert len({stable_hash(i) for i in range(10_000)}) == 10_000


@given(st.lists(st.integers(0, 50), max_size=300))
def test_sketch_never_underestimates_before_aging(keys: list[int]) -> None:
    sketch = FrequencySketch(64)  # sample of 640 additions: no aging here
    for key in keys:
        sketch.increment(key)
    for key, count in Counter(keys).items():
        assert sketch.estimate(key) >= min(count, 16)


def test_sketch_ages_and_separates_hot_from_cold() -> None:
    sketch = FrequencySketch(100)
    rng = random.Random(4)
    for _ in range(sketch.sample_size - 1):
        sketch.increment(rng.choice([1, 2, 3]) if rng.random() < 0.5 else rng.randrange(10**6))
    assert sketch.estimate(1) == 16 and sketch.estimate(999_999_999) <= 1
    sketch.increment(4)  # reaches the sample size: halve, clear doorkeeper
    assert sketch.additions == sketch.sample_size // 2
    assert sketch.estimate(1) == 7
    with pytest.raises(InvalidArgument):
        FrequencySketch(0)


def test_doorkeeper_absorbs_the_first_sighting() -> None:
    sketch = FrequencySketch(64)
    sketch.increment("once")
    assert sketch.estimate("once") == 1
    assert sum(sketch._counters) == 0


@given(st.lists(st.integers(0, 30), max_size=400), st.integers(1, 8))
def test_space_saving_bounds(keys: list[int], k: int) -> None:
    tracker = SpaceSaving(k)
    for key in keys:
        tracker.add(key)
    truth = Counter(keys)
    for key, estimate in tracker.top():
        assert tracker.guaranteed(key) <= truth[key] <= estimate
    for key, count in truth.items():
        if count > len(keys) / k:
            assert tracker.count(key) >= count  # every heavy hitter is tracked
    assert len(tracker.top()) <= k and tracker.total == len(keys)
    tracker.decay()
    assert tracker.total == len(keys) // 2
    with pytest.raises(InvalidArgument):
        SpaceSaving(0)
