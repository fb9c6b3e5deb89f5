"""Caches: eviction policies, patterns against stampedes, a trace simulator and a cluster.

Start with ``TinyLFUCache`` (adaptive W-TinyLFU) unless a trace says otherwise; see
docs/cache.md for measured hit ratios per policy.
"""

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
    "optimal_hit_ratio",
    "optimal_hits",
    "stable_hash",
]
