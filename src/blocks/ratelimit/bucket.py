"""Rate limits that refill continuously: ``TokenBucket`` and ``GCRA``.

Theory of operation
-------------------
Both admit bursts of up to ``burst`` units and a sustained ``rate_per_s``; both promise that
over *any* interval of length ``t`` seconds the admitted cost is at most
``burst + rate_per_s * t``. They differ in what they store per key.

``TokenBucket`` stores ``(tokens, last_update)``. On each request it first adds the tokens
earned since the last update (capped at ``burst``), then admits the request if enough tokens
are there and takes them. A refused request waits ``(cost - tokens) / rate`` seconds.

``GCRA`` (the generic cell rate algorithm, from ATM networks; the algorithm behind several
production limiters) stores a single number, the *theoretical arrival time* ``tat``: when the
key would be back to a full allowance if requests had been spaced exactly at the rate. Each
unit of cost pushes ``tat`` forward by the emission interval ``T = 1 / rate``; a request is
admitted while ``tat`` stays within ``burst * T`` of now. One float per key and no refill
step: cheaper to store in a shared store, and exactly equivalent to the bucket.
"""

from __future__ import annotations

import math

from blocks.core.clock import Clock
from blocks.ratelimit.api import Decision
from blocks.ratelimit.base import EPSILON, KEYS_MAX, KeyedLimiter, StateT, ceil_ms, check_positive

__all__ = ["GCRA", "TokenBucket"]

MICROS = 1_000_000


class _RateAndBurst(KeyedLimiter[StateT]):
    """What both limiters are built from: ``burst`` units at once and ``rate_per_s``
    sustained; ``_interval_us`` (the emission interval ``T``) and ``_tolerance_us``
    (``burst * T``) are the same two limits in time, as GCRA reads them."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        *,
        clock: Clock | None = None,
        keys_max: int = KEYS_MAX,
    ) -> None:
        check_positive("rate_per_s", rate_per_s)
        super().__init__(burst, clock, keys_max)
        self.rate_per_s = float(rate_per_s)
        self.burst = burst
        self._interval_us = MICROS / self.rate_per_s
        self._tolerance_us = self._interval_us * burst


class TokenBucket(_RateAndBurst[tuple[float, int]]):
    """Token bucket per key: ``burst`` tokens, refilled at ``rate_per_s``."""

    def _tokens(self, state: tuple[float, int] | None, now_us: int) -> float:
        if state is None:
            return float(self.burst)
        tokens, at_us = state
        return min(float(self.burst), tokens + max(0, now_us - at_us) * self.rate_per_s / MICROS)

    def _decide(
        self, state: tuple[float, int] | None, now_us: int, cost: int
    ) -> tuple[tuple[float, int], Decision]:
        tokens = self._tokens(state, now_us)
        allowed = tokens + EPSILON >= cost
        retry_us = 0.0
        if allowed:
            tokens = max(0.0, tokens - cost)
        else:
            retry_us = (cost - tokens) * MICROS / self.rate_per_s
        reset_us = (self.burst - tokens) * MICROS / self.rate_per_s
        decision = Decision(
            allowed=allowed,
            remaining=math.floor(tokens + EPSILON),
            retry_after_ms=ceil_ms(retry_us),
            reset_ms=ceil_ms(reset_us),
        )
        return (tokens, now_us), decision

    def _is_full(self, state: tuple[float, int], now_us: int) -> bool:
        return self._tokens(state, now_us) + EPSILON >= self.burst


class GCRA(_RateAndBurst[float]):
    """GCRA per key: the same promise as ``TokenBucket`` with one float of state."""

    def _decide(self, state: float | None, now_us: int, cost: int) -> tuple[float, Decision]:
        tat = float(now_us) if state is None else max(state, float(now_us))
        candidate = tat + self._interval_us * cost
        allowed = candidate - now_us <= self._tolerance_us + EPSILON
        retry_us = 0.0
        if allowed:
            tat = candidate
        else:
            retry_us = candidate - now_us - self._tolerance_us
        headroom_us = self._tolerance_us - (tat - now_us)
        decision = Decision(
            allowed=allowed,
            remaining=max(0, math.floor(headroom_us / self._interval_us + EPSILON)),
            retry_after_ms=ceil_ms(retry_us),
            reset_ms=ceil_ms(tat - now_us),
        )
        return tat, decision

    def _is_full(self, state: float, now_us: int) -> bool:
        return state <= now_us
