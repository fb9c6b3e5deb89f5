"""The simulator's W-TinyLFU fast path decides exactly like ``TinyLfuPolicy.request``."""

from __future__ import annotations

import random
from collections.abc import Hashable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.cache import TinyLfuPolicy
from blocks.cache.fastsim import tinylfu_hit_count
from blocks.cache.sketch import FrequencySketch
from blocks.cache.traces import load_trace
from blocks.cache.workloads import loop_trace, recency_trace, zipf_with_scans


def state(policy: TinyLfuPolicy) -> tuple[object, ...]:
    policy.drain_reads()
    sketch = policy.sketch
    return (
        list(policy._window.items()),
        list(policy._probation.items()),
        list(policy._protected.items()),
        list(policy._window_ghost),
        list(policy._main_ghost),
        policy._slots,
        policy.window_max,
        policy._votes,
        policy._requests_in_sample,
        policy._misses_in_sample,
        bytes(sketch._counters),
        bytes(sketch._door),
        sketch.additions,
        sorted(map(repr, sketch.saturated)),
        policy._random.random(),
    )


def pair(capacity: int, **options: object) -> tuple[TinyLfuPolicy, TinyLfuPolicy]:
    def make() -> TinyLfuPolicy:
        return TinyLfuPolicy(capacity, rng=random.Random(7), **options)  # type: ignore[arg-type]

    return make(), make()


def check(capacity: int, trace: list[Hashable], **options: object) -> None:
    fast, slow = pair(capacity, **options)
    slow_hits = sum(slow.request(key) for key in trace)
    assert tinylfu_hit_count(fast, trace) == slow_hits
    assert state(fast) == state(slow)


@settings(max_examples=150, deadline=None)
@given(
    capacity=st.integers(1, 30),
    keys=st.lists(st.integers(0, 80), max_size=2000),
    climber=st.sampled_from(["shadow", "trial"]),
    guard=st.booleans(),
    adaptive=st.booleans(),
    cut=st.integers(0, 2000),
)
def test_fast_path_equals_request_by_request(
    capacity: int, keys: list[int], climber: str, guard: bool, adaptive: bool, cut: int
) -> None:
    options = {"climber": climber, "guard": guard, "adaptive": adaptive, "climb_sample_factor": 0.5}
    fast, slow = pair(capacity, **options)
    # Two calls, with the policy's own request path in between: the fast path picks up any state.
    first, second = keys[:cut], keys[cut:]
    fast_hits = tinylfu_hit_count(fast, first)
    fast_hits += sum(fast.request(key) for key in second[:50])
    fast_hits += tinylfu_hit_count(fast, second[50:])
    assert fast_hits == sum(slow.request(key) for key in keys)
    assert state(fast) == state(slow)


def test_fast_path_on_long_traces() -> None:
    """Long traces cross many climber samples, sketch agings and popular-loser coin flips."""
    check(100, zipf_with_scans(30_000, random.Random(5), hot_keys=400, scan_every=300))
    check(100, recency_trace(30_000, random.Random(6)))
    check(150, loop_trace(20_000, 160))
    rng = random.Random(9)
    check(50, [f"k{int(rng.paretovariate(1.2)) % 300}" for _ in range(10_000)])


KEYS = st.one_of(st.integers(-(1 << 70), 1 << 70), st.text(max_size=6), st.binary(max_size=6))


@given(capacity=st.integers(1, 5000), keys=st.lists(KEYS, max_size=50))
def test_slots_many_is_slots_of_each_key(capacity: int, keys: list[Hashable]) -> None:
    sketch = FrequencySketch(capacity)
    assert sketch.slots_many(keys) == [sketch.slots(key) for key in keys]


TRACES = Path(__file__).resolve().parents[3] / "shared" / "traces"
REAL = [("loop", 1000), ("multi2", 284), ("sprite", 354)]


@pytest.mark.skipif(not TRACES.is_dir(), reason=f"{TRACES} is absent (shared traces not here)")
@pytest.mark.parametrize(("name", "size"), REAL)
def test_fast_path_agrees_request_by_request_on_real_traces(name: str, size: int) -> None:
    """On the first 12,000 requests of a real trace: the fast path fed one request at a time
    for 400 requests (each hit or miss compared), then in chunks of 97 (hits and the whole
    state compared at each chunk's end, so every sample end and aging in between is crossed)."""
    path = TRACES / f"{name}.lirs.gz"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    trace = list(load_trace(path))[:12_000]
    fast, slow = pair(size)
    for key in trace[:400]:
        assert tinylfu_hit_count(fast, [key]) == int(slow.request(key))
    assert state(fast) == state(slow)
    for start in range(400, len(trace), 97):
        chunk = trace[start : start + 97]
        assert tinylfu_hit_count(fast, chunk) == sum(slow.request(key) for key in chunk)
        assert state(fast) == state(slow)


@settings(max_examples=80, deadline=None)
@given(
    capacity=st.integers(2, 30),
    weighted=st.lists(st.tuples(st.integers(0, 60), st.integers(1, 5)), max_size=40),
    keys=st.lists(
        st.one_of(st.integers(0, 60), st.sampled_from(["a", "b", b"a", 1.5])), max_size=800
    ),
)
def test_fast_path_takes_over_weighted_residents_and_mixed_keys(
    capacity: int, weighted: list[tuple[int, int]], keys: list[Hashable]
) -> None:
    """Residents inserted with weights above 1 (the fast path's unit-weight shortcuts must
    stand aside) and keys of several types (ids are given per run and taken back)."""
    fast, slow = pair(capacity, climb_sample_factor=0.5)
    for policy in (fast, slow):
        for key, weight in weighted:
            if key not in policy and weight <= capacity:
                policy.insert(key, weight)
    assert tinylfu_hit_count(fast, keys) == sum(slow.request(key) for key in keys)
    assert state(fast) == state(slow)
