"""Caches: eviction policies, patterns against stampedes, a trace simulator and a cluster.

Start with ``TinyLFUCache`` (adaptive W-TinyLFU) unless a trace says otherwise; see
docs/cache.md for measured hit ratios per policy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from blocks.cache.api import MISSING, Cache, CacheStats, EvictionPolicy
from blocks.cache.arc import ArcPolicy
from blocks.cache.lfu import LfuPolicy
from blocks.cache.local import ARCCache, LFUCache, LRUCache, PolicyCache, TinyLFUCache
from blocks.cache.lru import LruPolicy
from blocks.cache.optimal import optimal_hit_ratio, optimal_hits
from blocks.cache.sketch import FrequencySketch, SpaceSaving, stable_hash
from blocks.cache.tinylfu import TinyLfuPolicy

__all__ = [
    "MISSING",
    "ARCCache",
    "ArcPolicy",
    "Cache",
    "CacheStats",
    "EvictionPolicy",
    "FrequencySketch",
    "LFUCache",
    "LRUCache",
    "LfuPolicy",
    "LruPolicy",
    "PolicyCache",
    "SpaceSaving",
    "TinyLFUCache",
    "TinyLfuPolicy",
    "connect",
    "optimal_hit_ratio",
    "optimal_hits",
    "stable_hash",
]


if TYPE_CHECKING:
    from blocks.cache.client import CacheClient


def connect(
    address: str = "127.0.0.1:7305", *, token: str | None = None, timeout_s: float = 1.0
) -> CacheClient:
    """An async client of the cache node at ``address``; use it with ``async with`` (``HOST:PORT``, the default is ``blocks cache serve``'s)."""
    from blocks.cache.client import CacheClient

    return CacheClient(address, token=token, timeout_s=timeout_s)
