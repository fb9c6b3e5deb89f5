"""W-TinyLFU's fast paths change nothing: buffered hits, batched counting, saturated keys.

Each fast path is checked against a slow one computed independently: hits applied one at a
time, a sketch counted one key at a time, and a plain conservative-update count-min written
here from the definition. The last tests check the climber's escape from a full window.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Hashable

from hypothesis import given
from hypothesis import strategies as st
from key_streams import key_lists

from blocks.cache import FrequencySketch, LruPolicy, TinyLFUCache, TinyLfuPolicy
from blocks.cache.sketch import Slots
from blocks.cache.tinylfu import READ_BUFFER_MAX
from blocks.cache.workloads import recency_trace, zipf_with_scans

OPS = st.lists(
    st.tuples(st.sampled_from(["touch", "touch", "touch", "del"]), st.integers(0, 30)),
    max_size=400,
)


def state(policy: TinyLfuPolicy) -> tuple[object, ...]:
    policy.drain_reads()
    sketch = policy.sketch
    return (
        list(policy._window.items()),
        list(policy._probation.items()),
        list(policy._protected.items()),
        policy.window_max,
        bytes(sketch._counters),
        bytes(sketch._door),
        sketch.additions,
    )


@given(capacity=st.integers(1, 12), ops=OPS)
def test_buffered_hits_decide_exactly_like_immediate_ones(
    capacity: int, ops: list[tuple[str, int]]
) -> None:
    buffered, immediate = TinyLfuPolicy(capacity), TinyLfuPolicy(capacity)
    for op, key in ops:
        if op == "del":
            if key in buffered:
                buffered.remove(key)
                immediate.remove(key)
            continue
        assert buffered.request(key) == immediate.request(key)
        immediate.drain_reads()  # every hit applied at once
        assert len(buffered.reads) <= READ_BUFFER_MAX
    assert state(buffered) == state(immediate)


def test_buffered_hits_on_long_traces() -> None:
    """Long runs of hits cross the climber's samples and the sketch's aging inside a batch."""
    for trace in (
        zipf_with_scans(30_000, random.Random(5), hot_keys=400, scan_every=300),
        recency_trace(30_000, random.Random(6)),
    ):
        buffered, immediate = TinyLfuPolicy(100), TinyLfuPolicy(100)
        for key in trace:
            assert buffered.request(key) == immediate.request(key)
            immediate.drain_reads()
        assert state(buffered) == state(immediate)


def full_state(policy: TinyLfuPolicy) -> tuple[object, ...]:
    return (
        *state(policy),
        list(policy._window_ghost),
        list(policy._main_ghost),
        policy._votes,
        policy._requests_in_sample,
        policy._misses_in_sample,
        sorted(policy.sketch.saturated, key=repr),
        sorted(policy._slots.items(), key=repr),
        (policy._window_weight, policy._probation_weight, policy._protected_weight),
    )


HOT_RUNS = key_lists(100, min_size=200, max_size=1_000, hot_keys=8, hot_share=6 / 7)
"""Mostly eight hot keys, so runs of hits grow past ``SMALL_BATCH`` and take the batched
path (each key moved once, at its last hit), broken by misses on the other keys."""


@given(capacity=st.integers(8, 40), keys=HOT_RUNS)
def test_long_runs_of_buffered_hits_decide_like_immediate_ones(
    capacity: int, keys: list[int]
) -> None:
    """The per-request model is the same policy drained after every request; here batches are
    long, cross the climber's samples and the sketch's aging, and must change nothing."""
    buffered, immediate = TinyLfuPolicy(capacity), TinyLfuPolicy(capacity)
    for key in keys:
        assert buffered.request(key) == immediate.request(key)
        immediate.drain_reads()
    assert full_state(buffered) == full_state(immediate)


def replay_unit_and_general(
    capacity: int, ops: list[tuple[str, int]], weight_of: dict[int, int]
) -> None:
    """``insert(key, 1)`` (the inlined unit-weight miss) against the general
    ``_insert_weighted(key, 1)``, with the hits buffered in both and some heavier keys."""
    fast = TinyLfuPolicy(capacity, rng=random.Random(1))
    general = TinyLfuPolicy(capacity, rng=random.Random(1))
    for op, key in ops:
        if key in fast:
            if op == "del":
                fast.remove(key)
                general.remove(key)
            else:
                fast.access(key)
                general.access(key)
            continue
        weight = min(weight_of.get(key, 1), capacity)
        if weight == 1:
            assert fast.insert(key, 1) == general._insert_weighted(key, 1)
        else:
            assert fast.insert(key, weight) == general.insert(key, weight)
    assert full_state(fast) == full_state(general)


@given(
    capacity=st.integers(1, 12),
    ops=OPS,
    weight_of=st.dictionaries(st.integers(0, 30), st.integers(2, 4), max_size=3),
)
def test_the_unit_weight_miss_decides_like_the_general_one(
    capacity: int, ops: list[tuple[str, int]], weight_of: dict[int, int]
) -> None:
    replay_unit_and_general(capacity, ops, weight_of)


def test_the_unit_weight_miss_on_long_traces() -> None:
    """Across agings, climber samples, saturated keys and the popular candidates' lottery."""
    for trace in (
        zipf_with_scans(30_000, random.Random(5), hot_keys=400, scan_every=300),
        recency_trace(30_000, random.Random(6)),
    ):
        ops = [("del" if index % 97 == 0 else "touch", key) for index, key in enumerate(trace)]
        replay_unit_and_general(100, ops, {3: 5, 7: 2})  # type: ignore[arg-type]


@given(
    capacity=st.integers(1, 20),
    keys=key_lists(61, min_size=150, max_size=600),
    cut=st.integers(1, 300),
)
def test_add_many_is_add_one_at_a_time(capacity: int, keys: list[int], cut: int) -> None:
    batched, single = FrequencySketch(capacity), FrequencySketch(capacity)
    slots: dict[Hashable, Slots] = {key: batched.slots(key) for key in keys}
    for start in range(0, len(keys), cut):
        batched.add_many(keys[start : start + cut], slots)
    for key in keys:
        single.increment(key)
    assert bytes(batched._counters) == bytes(single._counters)
    assert bytes(batched._door) == bytes(single._door)
    assert batched.additions == single.additions
    assert batched.saturated == single.saturated


class PlainSketch:
    """Conservative-update count-min with a doorkeeper, straight from the definition."""

    def __init__(self, reference: FrequencySketch) -> None:
        self.reference = reference
        self.counters = [0] * len(reference._counters)
        self.door = [False] * (8 * len(reference._door))
        self.additions = 0

    def places(self, key: Hashable) -> tuple[list[int], list[int]]:
        first, first_bit, second, second_bit, *rows = self.reference.slots(key)
        bits = [8 * first + first_bit.bit_length() - 1, 8 * second + second_bit.bit_length() - 1]
        return bits, rows

    def increment(self, key: Hashable) -> None:
        bits, rows = self.places(key)
        if all(self.door[bit] for bit in bits):
            least = min(self.counters[row] for row in rows)
            for row in rows:
                if self.counters[row] == least < 15:
                    self.counters[row] += 1
        for bit in bits:
            self.door[bit] = True
        self.additions += 1
        if self.additions == self.reference.sample_size:
            self.counters = [count // 2 for count in self.counters]
            self.door = [False] * len(self.door)
            self.additions //= 2

    def estimate(self, key: Hashable) -> int:
        bits, rows = self.places(key)
        return min(self.counters[row] for row in rows) + all(self.door[bit] for bit in bits)


@given(capacity=st.integers(1, 20), keys=key_lists(10, min_size=100, max_size=700))
def test_saturated_keys_are_skipped_exactly(capacity: int, keys: list[int]) -> None:
    sketch = FrequencySketch(capacity)
    plain = PlainSketch(sketch)
    for key in keys:
        sketch.increment(key)
        plain.increment(key)
        assert sketch.estimate(key) == plain.estimate(key)
    assert list(sketch._counters) == plain.counters
    for key in set(keys):
        assert sketch.estimate(key) == plain.estimate(key)
    assert len(sketch.saturated) <= sketch.saturated_max


def test_cache_get_uses_the_buffer_and_agrees_with_the_policy() -> None:
    cache: TinyLFUCache[int, int] = TinyLFUCache(50)
    policy = TinyLfuPolicy(50)
    rng = random.Random(8)
    for _ in range(5_000):
        key = int(rng.paretovariate(1.1)) % 300
        hit = cache.get(key) is not None
        if not hit:
            cache.put(key, key)
        assert policy.request(key) == hit
    cache.check_invariants()
    assert state(cache.policy) == state(policy)  # type: ignore[arg-type]


def zipf(length: int, keys: int, rng: random.Random, skew: float = 0.9) -> list[int]:
    weights = list(itertools.accumulate(1.0 / rank**skew for rank in range(1, keys + 1)))
    return rng.choices(range(keys), cum_weights=weights, k=length)


def hit_ratio(policy: TinyLfuPolicy | LruPolicy, trace: list[int]) -> float:
    return sum(policy.request(key) for key in trace) / len(trace)


def test_the_climber_leaves_a_full_window_on_a_frequency_trace() -> None:
    """With the whole cache as window there is no main area to evict from; the candidates it
    could not take still count as evidence for a larger main area, so the window shrinks."""
    trace = zipf(20_000, 2_000, random.Random(1))
    policy = TinyLfuPolicy(200, window_fraction=1.0, rng=random.Random(0))
    ratio = hit_ratio(policy, trace)
    assert policy.window_max < 100
    assert ratio >= hit_ratio(LruPolicy(200), trace) + 0.04
