"""Hybrid logical clocks: timestamps that follow wall time yet respect causality.

Theory of operation (Kulkarni et al., 2014). A timestamp is a pair ``(wall_ms, logical)``
compared lexicographically; a clock keeps the largest pair it has returned or seen.

* ``now()`` (a local or send event) returns the physical clock when it has moved past the last
  timestamp, and otherwise the last timestamp with ``logical + 1``, so one clock's timestamps
  strictly increase even when the wall clock stalls or steps back.
* ``merge(remote)`` (a receive event) takes the largest of the three wall parts (its own, the
  remote's, the physical clock) and sets ``logical`` so that the result is above both its own
  last timestamp and the remote one. If *a* happens before *b* then ``ts(a) < ts(b)``, and
  ``wall_ms`` never runs ahead of the largest physical clock seen.

A remote timestamp more than ``max_offset_ms`` ahead of our physical clock is refused (with
the error class the owner names) instead of dragging every later timestamp into the future;
the clock is left as it was.

What differs between users is a parameter, not a copy: the timestamp type (``make`` builds
one from ``(wall_ms, logical)``, so its own validation and encoding stay its own), an optional
bound on ``logical`` (bumping past ``logical_max`` raises ``Overloaded`` and changes nothing),
and the error class for a far-ahead remote (``PeerError`` where it came off the wire,
``InvalidArgument`` where a caller handed it in).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from blocks.core.clock import Clock
from blocks.core.errors import BlocksError, InvalidArgument, Overloaded

__all__ = ["MAX_OFFSET_MS_DEFAULT", "HlcCore", "HlcStamp"]

MAX_OFFSET_MS_DEFAULT = 500


class HlcStamp(Protocol):
    """What the algorithm reads from a timestamp."""

    @property
    def wall_ms(self) -> int: ...

    @property
    def logical(self) -> int: ...


StampT = TypeVar("StampT", bound=HlcStamp)


class HlcCore(Generic[StampT]):
    """One node's hybrid logical clock over the timestamp type ``make`` builds.

    Not thread-safe: one per node core, driven by one loop. Every method either returns a
    timestamp greater than ``last`` and makes it the new ``last``, or raises and leaves
    ``last`` as it was.
    """

    __slots__ = ("_clock", "_far_ahead_error", "_last", "_logical_max", "_make", "max_offset_ms")

    def __init__(
        self,
        clock: Clock,
        make: Callable[[int, int], StampT],
        *,
        max_offset_ms: int = MAX_OFFSET_MS_DEFAULT,
        logical_max: int | None = None,
        far_ahead_error: type[BlocksError] = InvalidArgument,
    ) -> None:
        if max_offset_ms < 0:
            raise InvalidArgument("max_offset_ms must be >= 0")
        self._clock = clock
        self._make = make
        self._logical_max = logical_max
        self._far_ahead_error = far_ahead_error
        self._last = make(0, 0)
        self.max_offset_ms = max_offset_ms

    @property
    def last(self) -> StampT:
        """The largest timestamp this clock has returned (``(0, 0)`` before the first)."""
        return self._last

    def now(self) -> StampT:
        """Timestamp a local or send event: greater than every timestamp seen so far."""
        physical_ms = self._clock.now_ms()
        if physical_ms > self._last.wall_ms:
            stamp = self._make(physical_ms, 0)
        else:
            stamp = self._bumped(self._last.wall_ms, self._last.logical)
        self._last = stamp
        return stamp

    def merge(self, remote: HlcStamp) -> StampT:
        """Timestamp a receive event carrying ``remote``: greater than it and than ``last``."""
        physical_ms = self._clock.now_ms()
        ahead_ms = remote.wall_ms - physical_ms
        if ahead_ms > self.max_offset_ms:
            raise self._far_ahead_error(
                f"remote timestamp is {ahead_ms} ms ahead of the local clock "
                f"(more than max_offset_ms={self.max_offset_ms})"
            )
        last = self._last
        wall_ms = max(physical_ms, last.wall_ms, remote.wall_ms)
        if wall_ms == last.wall_ms and wall_ms == remote.wall_ms:
            stamp = self._bumped(wall_ms, max(last.logical, remote.logical))
        elif wall_ms == last.wall_ms:
            stamp = self._bumped(wall_ms, last.logical)
        elif wall_ms == remote.wall_ms:
            stamp = self._bumped(wall_ms, remote.logical)
        else:
            stamp = self._make(wall_ms, 0)
        self._last = stamp
        return stamp

    def _bumped(self, wall_ms: int, logical: int) -> StampT:
        if self._logical_max is not None and logical >= self._logical_max:
            raise Overloaded("HLC logical counter exhausted for this millisecond", retry_after_ms=1)
        return self._make(wall_ms, logical + 1)
