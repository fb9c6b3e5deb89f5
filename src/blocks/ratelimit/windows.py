"""Window-based limits: ``FixedWindow``, ``SlidingWindowLog`` and ``SlidingWindowCounter``.

Theory of operation
-------------------
All three allow ``limit`` units of cost per ``window_ms`` and differ in which windows the
promise covers, and what it costs to keep.

* ``FixedWindow`` counts cost per aligned window ``[k*W, (k+1)*W)`` of the monotonic clock.
  One integer per key; promise: at most ``limit`` per aligned window. A burst at the end of one
  window and another at the start of the next can admit ``2*limit`` within ``W``.
* ``SlidingWindowLog`` keeps the time and cost of each admitted request (same-instant requests
  share one entry) and drops entries older than ``W``. Exact: at most ``limit`` in *every*
  half-open interval ``(t - W, t]``. Memory grows with ``limit`` per key.
* ``SlidingWindowCounter`` keeps the counts of the current and the previous aligned window and
  estimates the sliding count as ``previous * (fraction of the previous window still inside
  the sliding window) + current``, assuming the previous window's requests were spread evenly.
  Two integers per key; promise: at most ``limit`` per aligned window, and close to the
  sliding promise when traffic is smooth.

Each refusal says when the same request would be admitted: the end of the window for
``FixedWindow``; the moment enough old entries expire for the log; the moment the weighted
estimate has decayed enough (possibly in the next window) for the counter.
"""

from __future__ import annotations

import math
from collections import deque

from blocks.core.clock import Clock
from blocks.core.errors import InvalidArgument
from blocks.ratelimit.api import Decision
from blocks.ratelimit.base import EPSILON, KEYS_MAX, KeyedLimiter, ceil_ms, check_positive

__all__ = ["LOG_LIMIT_MAX", "FixedWindow", "SlidingWindowCounter", "SlidingWindowLog"]

LOG_LIMIT_MAX = 100_000
"""Bound on ``SlidingWindowLog``'s limit, hence on the entries one key may hold."""


class _Windowed(KeyedLimiter[object]):
    def __init__(self, limit: int, window_ms: int, clock: Clock | None, keys_max: int) -> None:
        check_positive("window_ms", window_ms, integer=True)
        super().__init__(limit, clock, keys_max)
        self.limit = limit
        self.window_ms = window_ms
        self._window_us = window_ms * 1000


class FixedWindow(_Windowed):
    """At most ``limit`` per aligned window of ``window_ms``."""

    def __init__(
        self, limit: int, window_ms: int, *, clock: Clock | None = None, keys_max: int = KEYS_MAX
    ) -> None:
        super().__init__(limit, window_ms, clock, keys_max)

    def _decide(self, state: object, now_us: int, cost: int) -> tuple[object, Decision]:
        index = now_us // self._window_us
        count = 0
        if isinstance(state, tuple) and state[0] == index:
            count = state[1]
        allowed = count + cost <= self.limit
        if allowed:
            count += cost
        window_left_us = (index + 1) * self._window_us - now_us
        decision = Decision(
            allowed=allowed,
            remaining=self.limit - count,
            retry_after_ms=0 if allowed else ceil_ms(window_left_us),
            reset_ms=ceil_ms(window_left_us) if count else 0,
        )
        return (index, count), decision

    def _is_full(self, state: object, now_us: int) -> bool:
        assert isinstance(state, tuple)
        return bool(state[0] != now_us // self._window_us or state[1] == 0)


class SlidingWindowLog(_Windowed):
    """At most ``limit`` in every interval ``(t - window, t]``; keeps a log per key."""

    def __init__(
        self, limit: int, window_ms: int, *, clock: Clock | None = None, keys_max: int = KEYS_MAX
    ) -> None:
        if isinstance(limit, int) and limit > LOG_LIMIT_MAX:
            raise InvalidArgument(f"SlidingWindowLog limit must be at most {LOG_LIMIT_MAX}")
        super().__init__(limit, window_ms, clock, keys_max)

    def _expire(self, log: _Log, now_us: int) -> None:
        entries = log.entries
        while entries and entries[0][0] <= now_us - self._window_us:
            log.used -= entries.popleft()[1]

    def _decide(self, state: object, now_us: int, cost: int) -> tuple[object, Decision]:
        log = state if isinstance(state, _Log) else _Log()
        self._expire(log, now_us)
        entries = log.entries
        allowed = log.used + cost <= self.limit
        retry_us = 0
        if allowed:
            if entries and entries[-1][0] == now_us:
                entries[-1][1] += cost
            else:
                entries.append([now_us, cost])
            log.used += cost
        else:
            must_free = log.used + cost - self.limit
            for at_us, entry_cost in entries:
                must_free -= entry_cost
                if must_free <= 0:
                    retry_us = at_us + self._window_us - now_us
                    break
        reset_us = entries[-1][0] + self._window_us - now_us if entries else 0
        decision = Decision(allowed, self.limit - log.used, ceil_ms(retry_us), ceil_ms(reset_us))
        return log, decision

    def _is_full(self, state: object, now_us: int) -> bool:
        assert isinstance(state, _Log)
        self._expire(state, now_us)
        return not state.entries


class _Log:
    """One key's log: ``[time_us, cost]`` entries, oldest first, and their total cost."""

    __slots__ = ("entries", "used")

    def __init__(self) -> None:
        self.entries: deque[list[int]] = deque()
        self.used = 0


class SlidingWindowCounter(_Windowed):
    """Approximate sliding window from two aligned counts per key."""

    def __init__(
        self, limit: int, window_ms: int, *, clock: Clock | None = None, keys_max: int = KEYS_MAX
    ) -> None:
        super().__init__(limit, window_ms, clock, keys_max)

    def _rolled(self, state: object, now_us: int) -> tuple[int, int, int]:
        index = now_us // self._window_us
        if not isinstance(state, tuple):
            return index, 0, 0
        old_index, current, previous = state
        if old_index == index:
            return index, current, previous
        if old_index == index - 1:
            return index, 0, current
        return index, 0, 0

    def _decide(self, state: object, now_us: int, cost: int) -> tuple[object, Decision]:
        index, current, previous = self._rolled(state, now_us)
        window = self._window_us
        elapsed = now_us - index * window
        estimate = previous * (window - elapsed) / window + current
        allowed = estimate + cost <= self.limit + EPSILON
        retry_us = 0.0
        if allowed:
            current += cost
            estimate += cost
        elif current + cost <= self.limit:
            room = self.limit - current - cost
            retry_us = window - room * window / previous - elapsed
        else:
            room = self.limit - cost
            into_next = max(0.0, window - room * window / current) if current else 0.0
            retry_us = window - elapsed + into_next
        if current:
            reset_us = 2 * window - elapsed
        else:
            reset_us = window - elapsed if previous else 0
        decision = Decision(
            allowed=allowed,
            remaining=max(0, math.floor(self.limit - estimate + EPSILON)),
            retry_after_ms=ceil_ms(retry_us),
            reset_ms=ceil_ms(reset_us),
        )
        return (index, current, previous), decision

    def _is_full(self, state: object, now_us: int) -> bool:
        _, current, previous = self._rolled(state, now_us)
        return current == 0 and previous == 0
