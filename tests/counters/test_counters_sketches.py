from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.core.errors import InvalidArgument
from blocks.counters.countmin import CountMinSketch, TopK
from blocks.counters.hyperloglog import HyperLogLog


@pytest.mark.parametrize("precision,distinct", [(10, 50), (10, 20_000), (12, 6_000), (8, 3_000)])
def test_hll_error_within_three_standard_errors_over_many_seeds(
    precision: int, distinct: int
) -> None:
    errors = []
    for seed in range(25):
        sketch = HyperLogLog(precision, seed=seed)
        sketch.add_many(f"user-{seed}-{k}" for k in range(distinct))
        relative = (sketch.count() - distinct) / distinct
        errors.append(relative)
        assert abs(relative) <= 3 * sketch.relative_standard_error, (seed, relative)
    # The estimator is nearly unbiased: the mean error is well inside one standard error.
    assert abs(sum(errors) / len(errors)) < 1.04 / math.sqrt(1 << precision)


def test_hll_merge_counts_the_union_and_round_trips() -> None:
    left, right = HyperLogLog(11), HyperLogLog(11)
    left.add_many(str(k) for k in range(0, 6000))
    right.add_many(str(k) for k in range(4000, 10_000))
    union = HyperLogLog(11)
    union.add_many(str(k) for k in range(10_000))
    merged = left.copy()
    merged.merge(right)
    assert merged == union
    assert HyperLogLog.from_bytes(merged.to_bytes()) == merged
    assert abs(merged.count() - 10_000) < 3 * 0.023 * 10_000


def test_hll_duplicates_do_not_count() -> None:
    sketch = HyperLogLog(12)
    for _ in range(5):
        sketch.add_many([b"a", "b", b"c"])
    assert sketch.count() == 3


@given(data=st.binary(max_size=40))
def test_hll_from_bytes_refuses_anything_malformed(data: bytes) -> None:
    good = HyperLogLog(4).to_bytes()
    for candidate in (data, good[:-1], good + b"\x00", good[:-1] + b"\xff"):
        with pytest.raises(InvalidArgument):
            HyperLogLog.from_bytes(candidate)


def test_hll_bad_arguments() -> None:
    with pytest.raises(InvalidArgument):
        HyperLogLog(3)
    with pytest.raises(InvalidArgument):
        HyperLogLog(10).merge(HyperLogLog(11))
    with pytest.raises(InvalidArgument):
        HyperLogLog(10).add(5)  # type: ignore[arg-type]


def zipf_stream(rng: random.Random, keys: int, length: int) -> list[str]:
    weights = [1.0 / (rank + 1) for rank in range(keys)]
    return [f"k{key}" for key in rng.choices(range(keys), weights=weights, k=length)]


def test_count_min_never_underestimates_and_meets_its_bound() -> None:
    eps, delta = 0.005, 0.01
    trials = 0
    failures = 0
    for seed in range(6):
        rng = random.Random(seed)
        sketch = CountMinSketch.from_error(eps, delta, seed=seed)
        stream = zipf_stream(rng, 3000, 20_000)
        truth = Counter(stream)
        for key in stream:
            sketch.add(key)
        assert sketch.total == len(stream)
        for key in [f"k{k}" for k in range(3000)]:
            estimate = sketch.estimate(key)
            assert estimate >= truth[key]
            trials += 1
            failures += estimate - truth[key] > eps * sketch.total
    # Each query misses the bound with probability <= delta; allow slack for sampling.
    assert failures / trials <= 2 * delta


@given(
    left=st.lists(st.sampled_from("abcdefgh"), max_size=50),
    right=st.lists(st.sampled_from("abcdefgh"), max_size=50),
)
def test_count_min_merge_equals_sketch_of_combined_stream(
    left: list[str], right: list[str]
) -> None:
    one, two, both = (CountMinSketch(16, 3, seed=9) for _ in range(3))
    for item in left:
        one.add(item)
        both.add(item)
    for item in right:
        two.add(item)
        both.add(item)
    one.merge(two)
    assert all(one.estimate(x) == both.estimate(x) for x in "abcdefgh")
    assert one.total == both.total


def test_top_k_finds_heavy_hitters_and_merges() -> None:
    rng = random.Random(5)
    left, right = TopK(5, CountMinSketch(512, 4)), TopK(5, CountMinSketch(512, 4))
    stream = zipf_stream(rng, 500, 20_000)
    for index, key in enumerate(stream):
        (left if index % 2 else right).add(key)
    left.merge(right)
    truth = [key for key, _ in Counter(stream).most_common(3)]
    assert [key for key, _ in left.top(3)] == truth
    assert left.top(3)[0][1] >= Counter(stream)[truth[0]]


@pytest.mark.parametrize(
    "make",
    [
        lambda: CountMinSketch(0, 3),
        lambda: CountMinSketch(1 << 23, 3),
        lambda: CountMinSketch.from_error(0, 0.1),
        lambda: CountMinSketch(8, 2).add("x", -1),
        lambda: CountMinSketch(8, 2).add(7),
        lambda: CountMinSketch(8, 2).merge(CountMinSketch(8, 3)),
        lambda: TopK(0),
        lambda: TopK(3).merge(TopK(4)),
    ],
)
def test_sketch_bad_input(make: object) -> None:
    with pytest.raises(InvalidArgument):
        make()  # type: ignore[operator]
