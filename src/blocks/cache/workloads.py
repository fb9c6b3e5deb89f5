"""Synthetic traces, each hostile to some policy, for tests, demos and quick experiments.

All generators are pure functions of their arguments and an injected ``random.Random``:

* ``loop_trace``: a cyclic scan over more keys than the cache holds; LRU and ARC get 0 hits
  because each key is evicted just before it comes round again.
* ``recency_trace``: new keys keep arriving and are re-read a few times soon after; whatever
  was popular long ago is useless. Frequency-only admission (a fixed 1% window) collapses.
* ``zipf_with_scans``: skewed popularity interrupted by one-pass scans that flush LRU.
"""

from __future__ import annotations

import random

from blocks.core.errors import InvalidArgument

__all__ = ["loop_trace", "recency_trace", "zipf_with_scans"]


def _check_length(length: int) -> None:
    if length < 0:
        raise InvalidArgument(f"length must be >= 0, got {length}")


def loop_trace(length: int, loop_keys: int) -> list[int]:
    """``length`` requests cycling through keys ``0 .. loop_keys-1``."""
    _check_length(length)
    if loop_keys < 1:
        raise InvalidArgument(f"loop_keys must be >= 1, got {loop_keys}")
    return [index % loop_keys for index in range(length)]


def recency_trace(
    length: int, rng: random.Random, *, reuse: float = 0.7, mean_age: float = 40.0
) -> list[int]:
    """With probability ``reuse`` re-read a recent new key (age ~ exponential with
    ``mean_age`` new keys), otherwise introduce a new key."""
    _check_length(length)
    trace: list[int] = []
    newest = 0
    for _ in range(length):
        if newest and rng.random() < reuse:
            age = min(newest - 1, int(rng.expovariate(1.0 / mean_age)))
            trace.append(newest - 1 - age)
        else:
            newest += 1
            trace.append(newest)
    return trace


def zipf_with_scans(
    length: int, rng: random.Random, *, hot_keys: int, scan_every: int
) -> list[int]:
    """Pareto-distributed popularity over ``hot_keys`` keys; every fourth stretch of
    ``scan_every`` requests is a scan of never-repeated keys."""
    _check_length(length)
    if hot_keys < 1 or scan_every < 1:
        raise InvalidArgument("hot_keys and scan_every must be >= 1")
    trace: list[int] = []
    scanned = 1 << 40
    for index in range(length):
        if (index // scan_every) % 4 == 3:
            scanned += 1
            trace.append(scanned)
        else:
            trace.append(int(rng.paretovariate(1.0)) % hot_keys)
    return trace
