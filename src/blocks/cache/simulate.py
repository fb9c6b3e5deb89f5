"""The trace simulator: hit ratio of each policy at each size, with Bélády's optimum.

Theory of operation: a simulation feeds every key of a trace to a fresh ``EvictionPolicy``
through its ``request`` fast path (unit weights, every miss admitted) and counts hits. No
values, clocks or statistics objects are involved, so a policy's speed here is the speed of
its bookkeeping (W-TinyLFU's through the single-loop fast path in ``fastsim``). ``optimal`` is computed by ``blocks.cache.optimal`` rather than simulated.

``POLICIES`` maps the names the command line accepts to factories; ``simulate`` returns one
``SimulationResult`` per (policy, size), in the order asked.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from blocks.cache.api import EvictionPolicy
from blocks.cache.arc import ArcPolicy
from blocks.cache.fastsim import tinylfu_hit_count
from blocks.cache.lfu import LfuPolicy
from blocks.cache.lru import LruPolicy, check_capacity
from blocks.cache.optimal import optimal_hits
from blocks.cache.tinylfu import TinyLfuPolicy
from blocks.core.errors import InvalidArgument

__all__ = ["POLICIES", "SimulationResult", "hit_count", "make_policy", "simulate"]


def _tinylfu_fixed(capacity: int) -> EvictionPolicy:
    return TinyLfuPolicy(capacity, adaptive=False, rng=random.Random(0))


def _tinylfu(capacity: int) -> EvictionPolicy:
    return TinyLfuPolicy(capacity, rng=random.Random(0))


POLICIES: dict[str, Callable[[int], EvictionPolicy]] = {
    "lru": LruPolicy,
    "lfu": LfuPolicy,
    "arc": ArcPolicy,
    "wtinylfu": _tinylfu,
    "wtinylfu-1%": _tinylfu_fixed,
}
"""Policy name -> factory taking a capacity. ``optimal`` is handled separately."""

OPTIMAL = "optimal"


@dataclass(frozen=True, slots=True)
class SimulationResult:
    """One cell of the table: ``hit_ratio`` is a fraction in [0, 1]."""

    policy: str
    size: int
    hits: int
    requests: int

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, object]:
        return {"policy": self.policy, "size": self.size, "hit_ratio": self.hit_ratio}


def make_policy(name: str, capacity: int) -> EvictionPolicy:
    """Build the policy registered as ``name``."""
    factory = POLICIES.get(name)
    if factory is None:
        known = ", ".join([*POLICIES, OPTIMAL])
        raise InvalidArgument(f"unknown policy {name!r}; known: {known}")
    return factory(check_capacity(capacity))


def hit_count(policy: EvictionPolicy, trace: Sequence[Hashable]) -> int:
    """Feed ``trace`` to ``policy``; return the number of hits.

    A ``TinyLfuPolicy`` runs through ``blocks.cache.fastsim`` (same hits, same final state,
    several times faster); every other policy through its ``request``.
    """
    if type(policy) is TinyLfuPolicy:
        return tinylfu_hit_count(policy, trace)
    request = policy.request
    hits = 0
    for key in trace:
        if request(key):
            hits += 1
    return hits


def simulate(
    trace: Sequence[Hashable],
    policies: Sequence[str],
    sizes: Sequence[int],
    *,
    progress: Callable[[SimulationResult], None] | None = None,
) -> list[SimulationResult]:
    """Hit ratios of every policy (and ``optimal`` if named) at every size."""
    for name in policies:
        if name != OPTIMAL and name not in POLICIES:
            make_policy(name, 1)  # raises the helpful error
    for size in sizes:
        check_capacity(size)
    results: list[SimulationResult] = []
    for name in policies:
        for size in sizes:
            if name == OPTIMAL:
                hits = optimal_hits(trace, size)
            else:
                hits = hit_count(make_policy(name, size), trace)
            result = SimulationResult(name, size, hits, len(trace))
            results.append(result)
            if progress is not None:
                progress(result)
    return results
