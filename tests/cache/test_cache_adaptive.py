"""The adaptive policy does not collapse: small generated traces, each hostile to someone.

Each trace is compared with LRU, LFU and ARC and with Bélády's optimum, computed here by a
plain quadratic search independent of ``blocks.cache.optimal``. The fixed 1% window is
included to show that the recency trace really is the one that breaks it.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence

import pytest

from blocks.cache import ArcPolicy, LfuPolicy, LruPolicy, TinyLfuPolicy, optimal_hits
from blocks.cache.api import EvictionPolicy
from blocks.cache.workloads import loop_trace, recency_trace, zipf_with_scans

CAPACITY = 100


def belady(trace: Sequence[Hashable], capacity: int) -> int:
    """Hits of the clairvoyant policy: on a miss with a full cache, evict the key used last."""
    positions: dict[Hashable, list[int]] = {}
    for position, key in enumerate(trace):
        positions.setdefault(key, []).append(position)
    cursor = dict.fromkeys(positions, 0)
    resident: set[Hashable] = set()
    hits = 0

    def next_use(key: Hashable) -> int:
        uses = positions[key]
        return uses[cursor[key]] if cursor[key] < len(uses) else len(trace)

    for key in trace:
        cursor[key] += 1
        if key in resident:
            hits += 1
            continue
        if len(resident) >= capacity:
            resident.remove(max(resident, key=next_use))
        resident.add(key)
    return hits


def hit_ratio(policy: EvictionPolicy, trace: Sequence[Hashable]) -> float:
    return sum(policy.request(key) for key in trace) / len(trace)


def ratios(trace: Sequence[Hashable]) -> dict[str, float]:
    return {
        "lru": hit_ratio(LruPolicy(CAPACITY), trace),
        "lfu": hit_ratio(LfuPolicy(CAPACITY), trace),
        "arc": hit_ratio(ArcPolicy(CAPACITY), trace),
        "adaptive": hit_ratio(TinyLfuPolicy(CAPACITY, rng=random.Random(0)), trace),
        "fixed": hit_ratio(TinyLfuPolicy(CAPACITY, adaptive=False), trace),
        "optimal": belady(trace, CAPACITY) / len(trace),
    }


def scan_trace(length: int, rng: random.Random) -> list[int]:
    return zipf_with_scans(length, rng, hot_keys=20 * CAPACITY, scan_every=2 * CAPACITY)


@pytest.fixture(scope="module")
def loop() -> dict[str, float]:
    return ratios(loop_trace(12_000, CAPACITY * 3 // 2))


@pytest.fixture(scope="module")
def recency() -> dict[str, float]:
    return ratios(recency_trace(20_000, random.Random(3)))


@pytest.fixture(scope="module")
def scans() -> dict[str, float]:
    return ratios(scan_trace(20_000, random.Random(1)))


def test_loop_collapses_lru_but_not_the_adaptive_policy(loop: dict[str, float]) -> None:
    assert loop["lru"] == 0.0 and loop["arc"] < 0.05
    assert loop["adaptive"] >= 0.85 * loop["optimal"]


def test_recency_collapses_the_fixed_window_but_not_the_adaptive_policy(
    recency: dict[str, float],
) -> None:
    assert recency["fixed"] < recency["lru"] - 0.25  # the trace does break a 1% window
    assert recency["adaptive"] >= recency["lru"] - 0.03
    assert recency["adaptive"] >= recency["arc"] - 0.01
    assert recency["adaptive"] >= 0.8 * recency["optimal"]


def test_scans_do_not_flush_the_adaptive_policy(scans: dict[str, float]) -> None:
    best = max(scans["lru"], scans["lfu"], scans["arc"])
    assert scans["adaptive"] >= best - 0.01
    assert scans["adaptive"] >= 0.95 * scans["optimal"]


def test_no_policy_beats_the_optimum(
    loop: dict[str, float], recency: dict[str, float], scans: dict[str, float]
) -> None:
    for table in (loop, recency, scans):
        assert all(value <= table["optimal"] + 1e-12 for value in table.values())


def test_fast_optimal_agrees_with_the_quadratic_one() -> None:
    trace = scan_trace(3000, random.Random(9))
    for capacity in (10, CAPACITY):
        assert optimal_hits(trace, capacity) == belady(trace, capacity)
