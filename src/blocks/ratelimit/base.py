"""Shared machinery for per-key limiters: time in microseconds, key bounds, rounding.

Time is read from the injected ``Clock``'s monotonic reading and rounded to whole
microseconds, so the float noise of adding milliseconds to a ``ManualClock`` does not leak
into decisions. Waits are rounded *up* to whole milliseconds, which is what keeps
``retry_after_ms`` honest. Each algorithm keeps one small state per key; ``KeyedLimiter``
bounds how many keys it tracks, dropping keys whose state is back to "full allowance" (which
loses nothing) before refusing new keys with ``Overloaded``.
"""

from __future__ import annotations

import math
from typing import Any, Generic, TypeVar

from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import InvalidArgument, Overloaded
from blocks.ratelimit.api import KEY_BYTES_MAX, Decision

__all__ = ["EPSILON", "KEYS_MAX", "KeyedLimiter", "ceil_ms", "check_positive"]

KEYS_MAX = 1_000_000
EPSILON = 1e-6
"""Tolerance for float comparisons of tokens and microseconds."""

StateT = TypeVar("StateT")


def ceil_ms(microseconds: float) -> int:
    """Microseconds to whole milliseconds, rounded up (never 0 for a positive wait)."""
    if microseconds <= EPSILON:
        return 0
    return max(1, math.ceil((microseconds - EPSILON) / 1000.0))


def check_positive(name: str, value: Any, *, integer: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not 0 < value < 1e15:
        raise InvalidArgument(
            f"{name} must be a positive {'int' if integer else 'number'}, got {value!r}"
        )


class KeyedLimiter(Generic[StateT]):
    """Base class: validation, the clock, and the bounded per-key state table."""

    def __init__(self, capacity: int, clock: Clock | None, keys_max: int) -> None:
        check_positive("capacity", capacity, integer=True)
        check_positive("keys_max", keys_max, integer=True)
        if keys_max > KEYS_MAX:
            raise InvalidArgument(f"keys_max must be at most {KEYS_MAX}")
        self._capacity = capacity
        self._clock: Clock = clock or SystemClock()
        self._keys_max = keys_max
        self._states: dict[str, StateT] = {}

    @property
    def capacity(self) -> int:
        return self._capacity

    def _now_us(self) -> int:
        return round(self._clock.monotonic() * 1_000_000)

    def _check(self, key: str, cost: int) -> None:
        if not isinstance(key, str) or not key or len(key.encode()) > KEY_BYTES_MAX:
            raise InvalidArgument(f"key must be a non-empty str of at most {KEY_BYTES_MAX} bytes")
        if isinstance(cost, bool) or not isinstance(cost, int) or not 1 <= cost <= self._capacity:
            raise InvalidArgument(f"cost must be an int in [1, {self._capacity}], got {cost!r}")

    def acquire(self, key: str, cost: int = 1) -> Decision:
        self._check(key, cost)
        now_us = self._now_us()
        state = self._states.get(key)
        if state is None:
            self._make_room(now_us)
        state, decision = self._decide(state, now_us, cost)
        self._states[key] = state
        return decision

    def tracked_keys(self) -> int:
        return len(self._states)

    @property
    def clock(self) -> Clock:
        return self._clock

    def export_states(self) -> dict[str, StateT]:
        """Every key's state (times on this limiter's clock), for a snapshot."""
        return dict(self._states)

    def restore_states(self, states: dict[str, StateT]) -> None:
        """Replace the table with ``states`` from ``export_states`` (same algorithm and clock
        time base; ``blocks.ratelimit.durable`` keeps the time base across restarts)."""
        if len(states) > self._keys_max:
            raise InvalidArgument(f"more than {self._keys_max} keys in the restored states")
        self._states = dict(states)

    def _make_room(self, now_us: int) -> None:
        if len(self._states) < self._keys_max:
            return
        for stale in [k for k, s in self._states.items() if self._is_full(s, now_us)]:
            del self._states[stale]
        if len(self._states) >= self._keys_max:
            raise Overloaded(f"tracking {self._keys_max} keys, none idle", retry_after_ms=1000)

    def _decide(self, state: StateT | None, now_us: int, cost: int) -> tuple[StateT, Decision]:
        raise NotImplementedError

    def _is_full(self, state: StateT, now_us: int) -> bool:
        """True when forgetting this state would change no future decision."""
        raise NotImplementedError
