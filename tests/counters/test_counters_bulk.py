"""Bulk adds (numpy) give exactly the registers, cells and estimates of one-by-one adds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import blocks.counters.countmin as countmin_module
import blocks.counters.hyperloglog as hyperloglog_module
from blocks.core.errors import InvalidArgument
from blocks.counters.bulk import _bit_length, chunks, numpy_or_none
from blocks.counters.countmin import CountMinSketch
from blocks.counters.hyperloglog import HyperLogLog

ITEMS = st.lists(st.one_of(st.text(max_size=8), st.binary(max_size=8)), min_size=40, max_size=300)
"""At least 40 items, so that the vectorised path (32 items and more) runs."""
SEEDS = st.integers(0, (1 << 64) - 1)


def test_numpy_is_there_so_the_vectorised_path_runs() -> None:
    assert numpy_or_none() is not None


@pytest.mark.parametrize("bits", [64, 60, 54, 53, 52, 50])
def test_bit_length_is_exact_at_every_power_of_two(bits: int) -> None:
    """Below 2**53 one float conversion is exact; from 54 bits on, the 32-bit halves."""
    np = numpy_or_none()
    values = [0, 1] + [value for k in range(1, bits) for value in ((1 << k) - 1, 1 << k)]
    values.append((1 << bits) - 1)
    lengths = _bit_length(np, np.array(values, dtype=np.uint64), bits)
    assert lengths.tolist() == [value.bit_length() for value in values]


@settings(max_examples=80, deadline=None)
@given(items=ITEMS, precision=st.integers(4, 14), seed=SEEDS)
def test_hll_add_many_equals_one_by_one(
    items: list[str | bytes], precision: int, seed: int
) -> None:
    bulk, single = HyperLogLog(precision, seed=seed), HyperLogLog(precision, seed=seed)
    bulk.add_many(items)
    for item in items:
        single.add(item)
    assert bulk == single
    assert bulk.count() == single.count()


@settings(max_examples=80, deadline=None)
@given(
    items=ITEMS,
    # Powers of two take the wrapping-and-mask path, other widths the modulo path.
    width=st.integers(1, 3000) | st.sampled_from([1, 2, 16, 1024, 2048, 1 << 16]),
    depth=st.integers(1, 6),
    seed=SEEDS,
    data=st.data(),
)
def test_count_min_add_many_equals_one_by_one(
    items: list[str | bytes], width: int, depth: int, seed: int, data: st.DataObject
) -> None:
    counts = data.draw(st.lists(st.integers(0, 1 << 40), min_size=len(items), max_size=len(items)))
    bulk, single = CountMinSketch(width, depth, seed=seed), CountMinSketch(width, depth, seed=seed)
    bulk.add_many(items)
    bulk.add_many(items, counts)
    for item in items:
        single.add(item)
    for item, count in zip(items, counts, strict=True):
        single.add(item, count)
    assert bulk._rows == single._rows
    assert bulk.total == single.total
    assert [bulk.estimate(item) for item in items] == [single.estimate(item) for item in items]


@pytest.mark.parametrize("width", [2048, 2047, 1 << 20])
def test_count_min_columns_at_a_power_of_two_and_beside_it(width: int) -> None:
    """Many items at the benchmark's shape and beside it: bulk cells equal one-by-one cells."""
    items = [f"user-{k}" for k in range(3000)] + [b"\xff" * 9, "", "\u00e9t\u00e9"]
    bulk, single = CountMinSketch(width, 5, seed=12345), CountMinSketch(width, 5, seed=12345)
    bulk.add_many(items)
    for item in items:
        single.add(item)
    assert bulk._rows == single._rows


def test_without_numpy_the_pure_path_gives_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    items = [f"user-{k}" for k in range(500)] + [b"raw-%d" % k for k in range(100)]
    fast_hll, fast_cms = HyperLogLog(10), CountMinSketch(300, 4)
    fast_hll.add_many(items)
    fast_cms.add_many(items, range(len(items)))
    monkeypatch.setattr(hyperloglog_module, "numpy_or_none", lambda: None)
    monkeypatch.setattr(countmin_module, "numpy_or_none", lambda: None)
    pure_hll, pure_cms = HyperLogLog(10), CountMinSketch(300, 4)
    pure_hll.add_many(iter(items))
    pure_cms.add_many(iter(items), iter(range(len(items))))
    assert pure_hll == fast_hll
    assert pure_cms._rows == fast_cms._rows and pure_cms.total == fast_cms.total


def test_bulk_bad_input_raises_the_sketch_error_and_bad_counts_change_nothing() -> None:
    items: list[object] = [f"k{k}" for k in range(100)]
    with pytest.raises(InvalidArgument):
        HyperLogLog(8).add_many([*items, 3])  # type: ignore[list-item]
    sketch = CountMinSketch(64, 3)
    with pytest.raises(InvalidArgument):
        sketch.add_many([*items, 3.5])  # type: ignore[list-item]
    assert sketch.total == 0 and not any(map(any, sketch._rows))
    for counts in ([1] * 99 + [-1], [1] * 99 + [True], [1] * 99):
        with pytest.raises(InvalidArgument):
            sketch.add_many(items, counts)  # type: ignore[arg-type]
    assert sketch.total == 0 and not any(map(any, sketch._rows))


def test_totals_are_bounded() -> None:
    sketch = CountMinSketch(16, 2)
    sketch.add("a", countmin_module.TOTAL_MAX)
    with pytest.raises(InvalidArgument):
        sketch.add("b")
    with pytest.raises(InvalidArgument):
        sketch.add_many(["b"] * 40)
    with pytest.raises(InvalidArgument):
        sketch.merge(sketch.copy())
    assert sketch.total == countmin_module.TOTAL_MAX


def test_chunks_cover_the_input_in_order() -> None:
    assert list(chunks(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunks([], 3)) == []
