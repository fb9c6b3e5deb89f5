"""Clocks, injected wherever time matters.

Cores never read the wall clock themselves: they take a ``Clock``. Production code passes
``SystemClock``; tests and the simulator pass ``ManualClock``, which only moves when told to,
and can be moved *backwards* to test what a block does when NTP steps the wall clock.

Two readings, as an operating system gives them:

* ``now_ms()``: wall-clock milliseconds since the Unix epoch. Can jump, forwards or backwards.
  Use it for timestamps that leave the process (IDs, record times, TTL deadlines shared
  with other nodes).
* ``monotonic()``: seconds from an arbitrary origin that never decrease. Use it for timeouts,
  rates and durations inside one process.
"""

from __future__ import annotations

import os
import time
from typing import Protocol, runtime_checkable

from blocks.core.errors import InvalidArgument

__all__ = ["CLOCK_OFFSET_ENV", "Clock", "ManualClock", "SystemClock"]

# Test hook: a process started with this variable (integer milliseconds, may be negative)
# reads a wall clock that far off, as if NTP had stepped it; monotonic time is untouched.
# blocks.testing's nemesis sets it to give one node of a cluster a jumped clock.
CLOCK_OFFSET_ENV = "BLOCKS_CLOCK_OFFSET_MS"


def _offset_ms_from_environment() -> int:
    text = os.environ.get(CLOCK_OFFSET_ENV, "").strip()
    try:
        return int(text) if text else 0
    except ValueError:
        message = f"{CLOCK_OFFSET_ENV} must be integer milliseconds, got {text!r}"
        raise InvalidArgument(message) from None


_WALL_OFFSET_MS = _offset_ms_from_environment()


@runtime_checkable
class Clock(Protocol):
    """Source of time. Implementations must be cheap to call and thread-safe to read."""

    def now_ms(self) -> int:
        """Wall-clock time in integer milliseconds since the Unix epoch; may jump."""
        ...

    def monotonic(self) -> float:
        """Seconds since an arbitrary origin; never decreases within a process."""
        ...


class SystemClock:
    """The operating system's clocks."""

    __slots__ = ()

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + _WALL_OFFSET_MS

    def monotonic(self) -> float:
        return time.monotonic()

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """A clock that moves only when told to.

    ``advance`` moves both readings forward together; ``set_wall_ms`` and ``jump_wall_ms``
    move the wall clock alone (forwards or backwards), as a time-sync daemon would, while
    the monotonic reading stays put.
    """

    __slots__ = ("_monotonic_s", "_wall_ms")

    def __init__(self, wall_ms: int = 1_700_000_000_000, monotonic_s: float = 0.0) -> None:
        if wall_ms < 0:
            raise InvalidArgument(f"wall_ms must be >= 0, got {wall_ms}")
        self._wall_ms = wall_ms
        self._monotonic_s = float(monotonic_s)

    def now_ms(self) -> int:
        return self._wall_ms

    def monotonic(self) -> float:
        return self._monotonic_s

    def advance(self, seconds: float = 0.0, *, ms: int = 0) -> None:
        """Move time forward by ``seconds`` plus ``ms`` milliseconds (both clocks)."""
        total_ms = seconds * 1000.0 + ms
        if total_ms < 0:
            raise InvalidArgument("advance() cannot go backwards; use jump_wall_ms()")
        self._monotonic_s += total_ms / 1000.0
        self._wall_ms += round(total_ms)

    def set_wall_ms(self, wall_ms: int) -> None:
        """Set the wall clock to ``wall_ms``, possibly in the past; monotonic time is unchanged."""
        if wall_ms < 0:
            raise InvalidArgument(f"wall_ms must be >= 0, got {wall_ms}")
        self._wall_ms = wall_ms

    def jump_wall_ms(self, delta_ms: int) -> None:
        """Step the wall clock by ``delta_ms`` (negative steps go backwards)."""
        self.set_wall_ms(self._wall_ms + delta_ms)

    def __repr__(self) -> str:
        return f"ManualClock(wall_ms={self._wall_ms}, monotonic_s={self._monotonic_s})"
