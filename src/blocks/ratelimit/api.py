"""The rate limiter interface: per-key admission decisions with honest retry hints.

Every limiter here (``TokenBucket``, ``GCRA``, ``FixedWindow``, ``SlidingWindowLog``,
``SlidingWindowCounter``, ``DistributedLimiter``) answers ``acquire(key, cost)`` with a
``Decision``. ``contract.RateLimiterContract`` checks an implementation against a model of
its promise with a ``ManualClock``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from blocks.core.errors import InvalidArgument

__all__ = ["KEY_BYTES_MAX", "Decision", "RateLimiter"]

KEY_BYTES_MAX = 256


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one ``acquire``.

    * ``allowed``: the request was admitted and its cost was charged; a refused request
      charges nothing.
    * ``remaining``: how many more units of cost would be admitted right now.
    * ``retry_after_ms``: 0 when allowed; otherwise the wait after which the same request
      (same key, same cost) will be admitted if nothing else uses that key meanwhile. It is
      honest: a request made then is admitted.
    * ``reset_ms``: how long until the key is back to its full allowance with no further
      requests (or, for window algorithms, until the current window ends).
    """

    allowed: bool
    remaining: int
    retry_after_ms: int
    reset_ms: int

    def __post_init__(self) -> None:
        if self.remaining < 0 or self.retry_after_ms < 0 or self.reset_ms < 0:
            raise InvalidArgument("decision fields must be non-negative")
        if self.allowed and self.retry_after_ms:
            raise InvalidArgument("an admitted request has no retry_after_ms")

    def to_dict(self) -> dict[str, int | bool]:
        return {
            "allowed": self.allowed,
            "remaining": self.remaining,
            "retry_after_ms": self.retry_after_ms,
            "reset_ms": self.reset_ms,
        }


@runtime_checkable
class RateLimiter(Protocol):
    """Per-key admission control.

    Contract:

    * ``acquire(key, cost)`` decides now, never blocks, and charges ``cost`` only when it
      admits. Keys are independent of each other.
    * Over any interval the algorithm promises (see each class), admitted cost never exceeds
      the configured allowance.
    * ``retry_after_ms`` of a refusal is honest (see ``Decision``).
    * Keys are non-empty str of at most ``KEY_BYTES_MAX`` bytes; ``cost`` is an int in
      ``[1, capacity]``: larger costs could never be admitted and raise ``InvalidArgument``.
      The number of tracked keys is bounded (``keys_max``): keys back at their full
      allowance are forgotten first, and when none can be, ``Overloaded`` is raised.
    """

    @property
    def capacity(self) -> int:
        """The largest cost a single request may have."""
        ...

    def acquire(self, key: str, cost: int = 1) -> Decision:
        """Admit or refuse one request of ``cost`` units for ``key``."""
        ...
