"""The cache contract: what every ``Cache`` and every ``EvictionPolicy`` promises.

Theory of operation: a cache is two things glued together. An ``EvictionPolicy`` is a pure
bookkeeping engine over keys and weights: it remembers which keys are resident, is told about
hits, insertions and removals, and answers with the keys it chose to evict. It holds no values
and knows no time, so the trace simulator drives it directly at full speed. A ``Cache`` wraps
a policy with the values, the TTL deadlines (read from an injected ``Clock``), the statistics
and input validation. Every concrete cache (``LRUCache``, ``LFUCache``, ``ARCCache``,
``TinyLFUCache``) is the same wrapper around a different policy.

Capacity is a total *weight*: with the default weight of 1 per entry it is an entry count.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

__all__ = ["MISSING", "Cache", "CacheStats", "EvictionPolicy"]

K = TypeVar("K", bound=Hashable, contravariant=True)
V = TypeVar("V", contravariant=True)


class _Missing:
    """Sentinel type for "no default given" (``None`` is a legitimate cached value)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters since the cache was built. ``hits + misses`` equals the number of ``get`` calls.

    ``evictions`` counts entries the policy pushed out to make room; ``expirations`` counts
    entries removed because their TTL passed (lazily on access or by ``sweep``). ``size`` and
    ``weight`` describe the entries held now, which may include expired ones not yet removed.
    """

    hits: int
    misses: int
    evictions: int
    expirations: int
    size: int
    weight: int
    capacity: int

    @property
    def hit_ratio(self) -> float:
        """Hits over lookups, as a fraction in [0, 1]; 0.0 before any lookup."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "expirations": self.expirations,
            "size": self.size,
            "weight": self.weight,
            "capacity": self.capacity,
            "hit_ratio": self.hit_ratio,
        }


@runtime_checkable
class EvictionPolicy(Protocol):
    """Which keys stay: a pure, single-threaded engine over keys and integer weights.

    The caller owns the values; the policy only sees keys. The caller guarantees the
    preconditions stated on each method (they are asserted, not validated: they are bugs in
    the caller, never user input). ``weight`` never exceeds ``capacity`` after any call.
    """

    name: str

    @property
    def capacity(self) -> int:
        """Maximum total weight of resident keys (>= 1)."""
        ...

    @property
    def weight(self) -> int:
        """Total weight of resident keys."""
        ...

    def __len__(self) -> int:
        """Number of resident keys."""
        ...

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is resident; never changes any state."""
        ...

    def access(self, key: Hashable) -> None:
        """Record a hit on the resident ``key`` (precondition: ``key in self``)."""
        ...

    def insert(self, key: Hashable, weight: int) -> list[Hashable]:
        """Make ``key`` resident with ``weight`` (1 <= weight <= capacity, key not resident).

        Returns the keys evicted to make room, oldest decision first. The list may contain
        ``key`` itself when the policy declines to admit it (TinyLFU); the caller must then
        drop it too.
        """
        ...

    def remove(self, key: Hashable) -> None:
        """Forget the resident ``key`` (deleted or expired); it is not counted as an eviction."""
        ...

    def request(self, key: Hashable) -> bool:
        """Simulate one reference of weight 1: a hit records an access, a miss inserts.

        Returns True on a hit. This is the simulator's fast path.
        """
        ...


@runtime_checkable
class Cache(Protocol[K, V]):
    """A bounded in-process key-value cache with TTL and statistics.

    Contract:

    * ``weight`` (sum of entry weights) never exceeds ``capacity``; a ``put`` that would pass
      it evicts entries chosen by the policy. The entry just put may itself be refused by an
      admission policy (TinyLFU); it is then counted as an eviction.
    * ``get`` after ``put`` returns the value put, unless the entry was evicted, deleted or
      expired since. An expired entry is never returned: it is removed lazily when touched
      and by the bounded ``sweep``.
    * TTL deadlines are ``clock.monotonic() + ttl`` at ``put`` time; an entry is expired once
      ``clock.monotonic() >= deadline``.
    * Bad input (unhashable key, weight < 1 or > capacity, ttl <= 0 or not finite) raises
      ``InvalidArgument`` and changes nothing.
    * Not thread-safe: one owner at a time (wrap it in a lock or an event loop).
    """

    @property
    def capacity(self) -> int:
        """Maximum total weight."""
        ...

    def get(self, key: K, default: Any = MISSING) -> Any:
        """The live value for ``key``; on a miss ``default`` if given, else ``None``.

        Counts one hit or one miss and tells the policy about the hit.
        """
        ...

    def put(self, key: K, value: V, ttl: float | None = None, weight: int = 1) -> None:
        """Store ``value`` under ``key``, replacing any older entry; ``ttl`` in seconds."""
        ...

    def delete(self, key: K) -> bool:
        """Remove ``key``; True if a live entry was removed. Not counted as an eviction."""
        ...

    def __contains__(self, key: object) -> bool:
        """Whether a live entry exists; no statistics or recency change."""
        ...

    def __len__(self) -> int:
        """Entries held, possibly including expired ones not yet swept."""
        ...

    def stats(self) -> CacheStats:
        """A snapshot of the counters."""
        ...

    def sweep(self, max_entries: int = 64) -> int:
        """Remove up to ``max_entries`` expired entries, earliest deadline first; return count."""
        ...

    def clear(self) -> None:
        """Drop every entry (counters are kept)."""
        ...
