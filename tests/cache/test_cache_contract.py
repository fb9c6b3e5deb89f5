"""The public cache contract, run against every implementation."""

from __future__ import annotations

from typing import Any

import pytest

from blocks.cache import ARCCache, Cache, LFUCache, LRUCache, TinyLFUCache
from blocks.cache.contract import CacheContract


class LRUContract(CacheContract):
    def make_subject(self) -> Cache[Any, Any]:
        return LRUCache(self.capacity, clock=self.clock)


class LFUContract(CacheContract):
    def make_subject(self) -> Cache[Any, Any]:
        return LFUCache(self.capacity, clock=self.clock)


class ARCContract(CacheContract):
    def make_subject(self) -> Cache[Any, Any]:
        return ARCCache(self.capacity, clock=self.clock)


class TinyLFUContract(CacheContract):
    admits_every_put = False

    def make_subject(self) -> Cache[Any, Any]:
        return TinyLFUCache(self.capacity, clock=self.clock)


class TinyLFUFixedWindowContract(TinyLFUContract):
    capacity = 9

    def make_subject(self) -> Cache[Any, Any]:
        return TinyLFUCache(self.capacity, clock=self.clock, adaptive=False, window_fraction=0.2)


TestLRUContract = LRUContract.TestCase
TestLFUContract = LFUContract.TestCase
TestARCContract = ARCContract.TestCase
TestTinyLFUContract = TinyLFUContract.TestCase
TestTinyLFUFixedWindowContract = TinyLFUFixedWindowContract.TestCase


def test_make_subject_must_be_overridden() -> None:
    with pytest.raises(NotImplementedError):
        CacheContract()
