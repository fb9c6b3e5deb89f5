"""A model-based conformance test for any ``Cache``: run it against yours.

Theory of operation: a Hypothesis ``RuleBasedStateMachine`` drives a cache built with a
``ManualClock`` through puts (with TTLs and weights), gets, deletes, clock advances and sweeps,
next to a trivial model: a dict from key to ``(value, deadline, weight)``. The model cannot
know which key a policy will evict, so after every operation it *learns* evictions: a live
model key that the cache no longer contains was evicted, and the statistics must have
counted it. Everything else is checked exactly:

* a live key the cache holds returns exactly the value last put, and counts a hit;
* an expired key is never returned, whatever the policy did with it;
* expiry is exact: an entry put at time t with ttl d is live at every time < t + d and dead
  from t + d on (the model computes deadlines with the same ``clock.monotonic() + ttl``);
* total weight never exceeds capacity; hits + misses equals the number of gets; evictions,
  expirations and the entry count move by exactly what the model can account for;
* with ``admits_every_put``, an entry that fits is resident right after its put (an
  admission policy such as TinyLFU may refuse a newcomer: set it False);
* bad input raises ``InvalidArgument`` and changes nothing.

Capabilities (``declared_properties``): without ``"exact expiry"`` every put is made without
a TTL (an engine whose TTLs run on its own clock cannot follow the ``ManualClock``); without
``"statistics"`` no ``stats()`` counter is checked; without ``"capacity"`` the weight bound is
not checked (an engine bounded in bytes). Evictions are learned either way.

Use it by subclassing ``CacheContract`` (a ``blocks.testing.contract.Contract``) and
overriding ``make_subject()`` (build a cache of ``self.capacity`` reading time from
``self.clock``; set ``admits_every_put`` when your cache may refuse a newcomer), then
exposing ``MyContract.TestCase`` to pytest. ``make_cache(capacity, clock)`` is a deprecated
alias of ``make_subject``.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule

from blocks.cache.api import Cache
from blocks.core.clock import ManualClock
from blocks.core.errors import InvalidArgument
from blocks.testing.contract import Contract

__all__ = ["CacheContract"]

_KEYS = st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, "a", "b", b"c"])
_TTLS = st.one_of(st.none(), st.sampled_from([0.5, 1.0, 2.0, 3.0]))
_ABSENT = object()


class CacheContract(Contract[Cache[Any, Any]]):
    """Checks a ``Cache`` against a dict model with capacity and TTL rules."""

    properties = ("exact values", "exact expiry", "capacity", "statistics", "bad input")
    legacy_hooks = {"make_cache": "make_subject"}

    capacity = 5
    admits_every_put = True
    """True when every put of a fitting entry is resident right after the put (not TinyLFU)."""

    def make_subject(self) -> Cache[Any, Any]:
        return self.make_cache(self.capacity, self.clock)

    def make_cache(self, capacity: int, clock: ManualClock) -> Cache[Any, Any]:
        """Deprecated alias of ``make_subject``."""
        raise NotImplementedError(f"{type(self).__name__} must override make_subject()")

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.cache = self.open_subject()
        self.model: dict[Any, tuple[Any, float | None, int]] = {}
        self.gets = 0
        self.counter = 0

    def teardown(self) -> None:
        self.finish_subject(self.cache)

    def _live(self, key: Any) -> bool:
        deadline = self.model[key][1]
        return deadline is None or self.clock.monotonic() < deadline

    def _expired_keys(self) -> list[Any]:
        return [key for key in self.model if not self._live(key)]

    def _learn_evictions(self) -> int:
        gone = [key for key in self.model if self._live(key) and key not in self.cache]
        for key in gone:
            del self.model[key]
        return len(gone)

    @rule(key=_KEYS, ttl=_TTLS, weight=st.integers(1, 3))
    def put(self, key: Any, ttl: float | None, weight: int) -> None:
        self.counter += 1
        if not self.supports("exact expiry"):
            ttl = None
        value = ("value", self.counter)
        before = self.cache.stats()
        maybe_held_expired = len(self._expired_keys())
        self.cache.put(key, value, ttl=ttl, weight=weight)
        after = self.cache.stats()
        deadline = None if ttl is None else self.clock.monotonic() + ttl
        self.model[key] = (value, deadline, weight)
        evicted_live = self._learn_evictions()
        if self.admits_every_put:
            assert key in self.model, "a fitting entry was refused"
        if not self.supports("statistics"):
            return
        evictions = after.evictions - before.evictions
        expirations = after.expirations - before.expirations
        assert evicted_live <= evictions <= evicted_live + maybe_held_expired + 1
        assert 0 <= expirations <= maybe_held_expired

    @rule(key=_KEYS)
    def get(self, key: Any) -> None:
        before = self.cache.stats()
        found = self.cache.get(key, _ABSENT)
        after = self.cache.stats()
        self.gets += 1
        if key in self.model and self._live(key):
            assert found == self.model[key][0], (key, found, self.model[key])
            if self.supports("statistics"):
                assert after.hits == before.hits + 1 and after.misses == before.misses
        else:
            assert found is _ABSENT, f"{key!r} returned {found!r} but is absent or expired"
            self.model.pop(key, None)
            if self.supports("statistics"):
                assert after.misses == before.misses + 1 and after.hits == before.hits
                removed = after.expirations - before.expirations
                assert removed in (0, 1) and before.size - after.size == removed

    @rule(key=_KEYS)
    def delete(self, key: Any) -> None:
        expected = key in self.model and self._live(key)
        assert self.cache.delete(key) is expected
        self.model.pop(key, None)
        assert key not in self.cache

    @rule(seconds=st.sampled_from([0.5, 1.0, 1.5]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(budget=st.integers(0, 3))
    def sweep(self, budget: int) -> None:
        before = self.cache.stats()
        expired = len(self._expired_keys())
        removed = self.cache.sweep(budget)
        after = self.cache.stats()
        assert 0 <= removed <= min(budget, expired)
        if self.supports("statistics"):
            assert after.expirations - before.expirations == removed
            assert before.size - after.size == removed

    @rule()
    def sweep_all(self) -> None:
        self.cache.sweep(10_000)
        for key in self._expired_keys():
            del self.model[key]
        assert len(self.cache) == len(self.model)

    @rule(key=_KEYS, weight=st.sampled_from([0, -1, 10_000]))
    def put_bad_weight(self, key: Any, weight: int) -> None:
        self._refused(lambda: self.cache.put(key, "bad", weight=weight))

    @rule(key=_KEYS, ttl=st.sampled_from([0, -1.0, float("nan"), float("inf")]))
    def put_bad_ttl(self, key: Any, ttl: float) -> None:
        self._refused(lambda: self.cache.put(key, "bad", ttl=ttl))

    @rule()
    def put_unhashable(self) -> None:
        self._refused(lambda: self.cache.put(["not", "hashable"], "bad"))

    def _refused(self, action: Any) -> None:
        before = self.cache.stats()
        try:
            action()
        except InvalidArgument:
            pass
        else:
            raise AssertionError("bad input was accepted")
        if self.supports("statistics"):
            assert self.cache.stats() == before
        assert self._learn_evictions() == 0

    @precondition(lambda self: self.model)
    @rule()
    def every_live_key_is_held(self) -> None:
        for key in self.model:
            if self._live(key):
                assert key in self.cache

    @invariant()
    def bounded_and_consistent(self) -> None:
        stats = self.cache.stats()
        assert stats.capacity == self.capacity
        if self.supports("capacity"):
            assert stats.weight <= stats.capacity
        check = getattr(self.cache, "check_invariants", None)
        if check is not None:
            check()
        if not self.supports("statistics"):
            return
        assert stats.size == len(self.cache) and stats.weight >= stats.size
        assert stats.hits + stats.misses == self.gets
        live = [key for key in self.model if self._live(key)]
        live_weight = sum(self.model[key][2] for key in live)
        expired_weight = sum(self.model[key][2] for key in self._expired_keys())
        assert len(live) <= stats.size <= len(self.model)
        assert live_weight <= stats.weight <= live_weight + expired_weight
