"""In-process caches: values, TTL and statistics around an ``EvictionPolicy``.

Theory of operation: ``PolicyCache`` keeps one dict from key to an entry tuple ``(value,
weight, deadline)``; the policy keeps its own view of the same keys and decides evictions.
Every mutation goes to both, in the same call, so they never disagree (asserted by
``check_invariants``). A ``deadline`` is ``None`` for entries without a TTL, so lookups of
such entries never read the clock.

Expiry is lazy plus a bounded sweep. A lookup that finds an expired entry removes it and
reports a miss. Entries with a TTL are also pushed on a min-heap of ``(deadline, sequence,
key)``; ``sweep(max_entries)`` pops expired ones, at most ``max_entries`` per call, and each
``put`` runs a tiny sweep of ``PUT_SWEEP_ENTRIES`` so memory held by dead entries stays
bounded without a thread. Heap items left behind by overwrites and deletions are skipped when
popped, and the heap is rebuilt from the live entries once it holds more than twice as many
items as the cache (plus a constant), so it stays O(size).
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from blocks.cache.api import MISSING, CacheStats, EvictionPolicy
from blocks.cache.arc import ArcPolicy
from blocks.cache.lfu import LfuPolicy
from blocks.cache.lru import LruPolicy
from blocks.cache.tinylfu import READ_BUFFER_MAX, TinyLfuPolicy
from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import InvalidArgument

__all__ = [
    "PUT_SWEEP_ENTRIES",
    "ARCCache",
    "LFUCache",
    "LRUCache",
    "PolicyCache",
    "TinyLFUCache",
]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

PUT_SWEEP_ENTRIES = 2
"""Expired entries each ``put`` removes at most, on top of lazy expiry."""

_HEAP_SLACK = 64


def _check_weight(weight: int, capacity: int) -> None:
    if isinstance(weight, bool) or not isinstance(weight, int):
        raise InvalidArgument(f"weight must be an integer, got {type(weight).__name__}")
    if not 1 <= weight <= capacity:
        raise InvalidArgument(f"weight must be in [1, {capacity}], got {weight}")


def _check_ttl(ttl: float | None) -> None:
    if ttl is None:
        return
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise InvalidArgument(f"ttl must be a number of seconds, got {type(ttl).__name__}")
    if not math.isfinite(ttl) or ttl <= 0:
        raise InvalidArgument(f"ttl must be a finite number of seconds > 0, got {ttl}")


def _check_key(key: object) -> None:
    try:
        hash(key)  # validation only: dict needs it; stable hashes come from xxhash elsewhere
    except TypeError:
        raise InvalidArgument(f"key of type {type(key).__name__} is not hashable") from None


class PolicyCache(Generic[K, V]):
    """A ``Cache`` whose evictions are decided by ``policy``; see ``blocks.cache.api.Cache``."""

    def __init__(self, policy: EvictionPolicy, *, clock: Clock | None = None) -> None:
        self._policy = policy
        self._capacity = policy.capacity
        self._access: Callable[[Hashable], None] = policy.access  # bound once: hot path
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._entries: dict[Hashable, tuple[Any, int, float | None]] = {}
        self._deadlines: list[tuple[float, int, Hashable]] = []
        self._sequence = 0
        self._hits = self._misses = self._evictions = self._expirations = 0

    @property
    def capacity(self) -> int:
        return self._policy.capacity

    @property
    def policy(self) -> EvictionPolicy:
        return self._policy

    @property
    def weight(self) -> int:
        return self._policy.weight

    def __len__(self) -> int:
        return len(self._entries)

    def snapshot_keys(self) -> list[Any]:
        """A snapshot of the keys held (expired ones not yet swept included)."""
        return list(self._entries)

    def __contains__(self, key: object) -> bool:
        try:
            entry = self._entries.get(key)
        except TypeError:
            return False
        if entry is None:
            return False
        deadline = entry[2]
        return deadline is None or self._clock.monotonic() < deadline

    def __repr__(self) -> str:
        return f"{type(self).__name__}(capacity={self.capacity}, size={len(self)})"

    def get(self, key: K, default: Any = MISSING) -> Any:
        try:
            entry = self._entries.get(key)
        except TypeError:
            raise InvalidArgument(f"key of type {type(key).__name__} is not hashable") from None
        if entry is not None:
            deadline = entry[2]
            if deadline is None or self._clock.monotonic() < deadline:
                self._hits += 1
                self._access(key)
                return entry[0]
            self._expire(key)
        self._misses += 1
        return None if default is MISSING else default

    def put(self, key: K, value: V, ttl: float | None = None, weight: int = 1) -> None:
        if weight.__class__ is not int or not 1 <= weight <= self._capacity:
            _check_weight(weight, self._capacity)
        deadline: float | None = None
        if ttl is not None or self._deadlines:
            _check_ttl(ttl)
            _check_key(key)  # before the sweep below changes anything
            now = self._clock.monotonic()
            if self._deadlines:
                self._sweep_until(now, PUT_SWEEP_ENTRIES)
            if ttl is not None:
                deadline = now + ttl
        entries = self._entries
        try:
            old = entries.get(key)
        except TypeError:
            raise InvalidArgument(f"key of type {type(key).__name__} is not hashable") from None
        if old is not None and old[2] is not None and self._clock.monotonic() >= old[2]:
            self._expire(key)
            old = None
        entries[key] = (value, weight, deadline)
        if deadline is not None:
            self._push_deadline(deadline, key)
        if old is not None:
            if old[1] == weight:
                self._access(key)
                return
            self._policy.remove(key)
        evicted = self._policy.insert(key, weight)
        if evicted:
            for victim in evicted:
                del entries[victim]
            self._evictions += len(evicted)

    def delete(self, key: K) -> bool:
        try:
            entry = self._entries.get(key)
        except TypeError:
            raise InvalidArgument(f"key of type {type(key).__name__} is not hashable") from None
        if entry is None:
            return False
        if entry[2] is not None and self._clock.monotonic() >= entry[2]:
            self._expire(key)
            return False
        del self._entries[key]
        self._policy.remove(key)
        return True

    def clear(self) -> None:
        for key in list(self._entries):
            self._policy.remove(key)
        self._entries.clear()
        self._deadlines.clear()

    def stats(self) -> CacheStats:
        return CacheStats(
            hits=self._hits,
            misses=self._misses,
            evictions=self._evictions,
            expirations=self._expirations,
            size=len(self._entries),
            weight=self._policy.weight,
            capacity=self._policy.capacity,
        )

    def sweep(self, max_entries: int = 64) -> int:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 0:
            raise InvalidArgument(f"max_entries must be an integer >= 0, got {max_entries!r}")
        return self._sweep_until(self._clock.monotonic(), max_entries)

    def check_invariants(self) -> None:
        """Assert that entries and policy agree (for tests; O(size))."""
        policy = self._policy
        assert len(policy) == len(self._entries), (len(policy), len(self._entries))
        assert all(key in policy for key in self._entries)
        assert policy.weight == sum(entry[1] for entry in self._entries.values())
        assert policy.weight <= policy.capacity

    # -- internals ----------------------------------------------------------------------

    def _expire(self, key: Hashable) -> None:
        del self._entries[key]
        self._policy.remove(key)
        self._expirations += 1

    def _push_deadline(self, deadline: float, key: Hashable) -> None:
        self._sequence += 1
        heapq.heappush(self._deadlines, (deadline, self._sequence, key))
        if len(self._deadlines) > 2 * len(self._entries) + _HEAP_SLACK:
            self._deadlines = [
                (entry[2], index, live_key)
                for index, (live_key, entry) in enumerate(self._entries.items())
                if entry[2] is not None
            ]
            heapq.heapify(self._deadlines)

    def _sweep_until(self, now: float, max_entries: int) -> int:
        removed = 0
        heap = self._deadlines
        while heap and removed < max_entries and heap[0][0] <= now:
            deadline, _, key = heapq.heappop(heap)
            entry = self._entries.get(key)
            if entry is not None and entry[2] == deadline:
                self._expire(key)
                removed += 1
        return removed


class LRUCache(PolicyCache[K, V]):
    """Least-recently-used cache; ``capacity`` is a total weight (an entry count by default)."""

    def __init__(self, capacity: int, *, clock: Clock | None = None) -> None:
        policy = LruPolicy(capacity)
        super().__init__(policy, clock=clock)
        self._access = policy.access_function  # a hit is one C call


class LFUCache(PolicyCache[K, V]):
    """Least-frequently-used cache with O(1) operations (ties go to the least recent)."""

    def __init__(self, capacity: int, *, clock: Clock | None = None) -> None:
        super().__init__(LfuPolicy(capacity), clock=clock)


class ARCCache(PolicyCache[K, V]):
    """Adaptive Replacement Cache."""

    def __init__(self, capacity: int, *, clock: Clock | None = None) -> None:
        super().__init__(ArcPolicy(capacity), clock=clock)


class TinyLFUCache(PolicyCache[K, V]):
    """Adaptive W-TinyLFU cache: frequency-based admission with a hill-climbed window.

    A hit only appends the key to the policy's read buffer; the policy applies buffered hits
    in one batch when the buffer is full and before any decision that could see them (see
    ``TinyLfuPolicy.drain_reads``), so its decisions are those of one hit at a time.
    """

    def __init__(
        self,
        capacity: int,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        adaptive: bool = True,
        window_fraction: float = 0.01,
    ) -> None:
        policy = TinyLfuPolicy(
            capacity, rng=rng, adaptive=adaptive, window_fraction=window_fraction
        )
        super().__init__(policy, clock=clock)
        self._reads = policy.reads
        self._drain_reads = policy.drain_reads

    def get(self, key: K, default: Any = MISSING) -> Any:
        # PolicyCache.get with the policy's ``access`` inlined down to one list append.
        try:
            entry = self._entries.get(key)
        except TypeError:
            raise InvalidArgument(f"key of type {type(key).__name__} is not hashable") from None
        if entry is not None:
            deadline = entry[2]
            if deadline is None or self._clock.monotonic() < deadline:
                self._hits += 1
                reads = self._reads
                reads.append(key)
                if len(reads) >= READ_BUFFER_MAX:
                    self._drain_reads()
                return entry[0]
            self._expire(key)
        self._misses += 1
        return None if default is MISSING else default
