"""The public cache contract, run against every implementation."""

from __future__ import annotations

from typing import Any

import pytest

from blocks.cache import ARCCache, Cache, LFUCache, LRUCache, TinyLFUCache
from blocks.cache.contract import CacheContract
from blocks.core.clock import ManualClock


class LRUContract(CacheContract):
    def make_cache(self, capacity: int, clock: ManualClock) -> Cache[Any, Any]:
        return LRUCache(capacity, clock=clock)


class LFUContract(CacheContract):
    def make_cache(self, capacity: int, clock: ManualClock) -> Cache[Any, Any]:
        return LFUCache(capacity, clock=clock)


class ARCContract(CacheContract):
    def make_cache(self, capacity: int, clock: ManualClock) -> Cache[Any, Any]:
        return ARCCache(capacity, clock=clock)


class TinyLFUContract(CacheContract):
    admits_every_put = False

    def make_cache(self, capacity: int, clock: ManualClock) -> Cache[Any, Any]:
        return TinyLFUCache(capacity, clock=clock)


class TinyLFUFixedWindowContract(TinyLFUContract):
    capacity = 9

    def make_cache(self, capacity: int, clock: ManualClock) -> Cache[Any, Any]:
        return TinyLFUCache(capacity, clock=clock, adaptive=False, window_fraction=0.2)


TestLRUContract = LRUContract.TestCase
TestLFUContract = LFUContract.TestCase
TestARCContract = ARCContract.TestCase
TestTinyLFUContract = TinyLFUContract.TestCase
TestTinyLFUFixedWindowContract = TinyLFUFixedWindowContract.TestCase


def test_make_cache_must_be_overridden() -> None:
    with pytest.raises(NotImplementedError):
        CacheContract()
