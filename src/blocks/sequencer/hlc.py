"""Hybrid logical clocks: timestamps that follow physical time and respect causality.

Theory of operation
-------------------
An HLC timestamp is a pair ``(wall_ms, logical)`` compared lexicographically. A node keeps
the largest pair it has seen. For a local or send event it takes ``max(last.wall_ms, now)``
and bumps ``logical`` only when the wall part did not move. On receiving a remote timestamp
it takes the maximum of the three wall parts (its own, the remote's, the physical clock) and
sets ``logical`` so the result is above both its own last timestamp and the remote one.
Hence: if event *a* happens before *b* (same node, or *a* sent and then received), then
``ts(a) < ts(b)``; and ``wall_ms`` never runs ahead of the largest physical clock seen, so it
stays close to real time (Kulkarni et al., 2014).

A remote timestamp more than ``max_offset_ms`` ahead of our physical clock is refused with
``InvalidArgument``: accepting it would drag every later timestamp on this node into the
future. ``logical`` is bounded by 16 bits so that a timestamp packs into one 64-bit integer
(48 bits of milliseconds, 16 of counter); overflowing it raises ``Overloaded``.
"""

from __future__ import annotations

from dataclasses import dataclass

from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import InvalidArgument, Overloaded

__all__ = ["LOGICAL_MAX", "HlcTimestamp", "HybridLogicalClock"]

LOGICAL_BITS = 16
LOGICAL_MAX = (1 << LOGICAL_BITS) - 1
WALL_MAX_MS = (1 << 48) - 1


@dataclass(frozen=True, slots=True, order=True)
class HlcTimestamp:
    """A hybrid timestamp; ordering is by ``wall_ms`` then ``logical``."""

    wall_ms: int
    logical: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.wall_ms <= WALL_MAX_MS or not 0 <= self.logical <= LOGICAL_MAX:
            raise InvalidArgument(f"HLC timestamp out of range: {self.wall_ms}.{self.logical}")

    def pack(self) -> int:
        """One 64-bit integer whose order matches the timestamp order."""
        return (self.wall_ms << LOGICAL_BITS) | self.logical

    @classmethod
    def unpack(cls, packed: int) -> HlcTimestamp:
        if not isinstance(packed, int) or not 0 <= packed < (1 << 64):
            raise InvalidArgument("a packed HLC timestamp is an unsigned 64-bit integer")
        return cls(packed >> LOGICAL_BITS, packed & LOGICAL_MAX)


class HybridLogicalClock:
    """One node's HLC. Not thread-safe."""

    __slots__ = ("_clock", "_last", "_max_offset_ms")

    def __init__(self, *, clock: Clock | None = None, max_offset_ms: int = 500) -> None:
        if max_offset_ms < 0:
            raise InvalidArgument("max_offset_ms must be >= 0")
        self._clock: Clock = clock or SystemClock()
        self._max_offset_ms = max_offset_ms
        self._last = HlcTimestamp(0, 0)

    @property
    def last(self) -> HlcTimestamp:
        return self._last

    def now(self) -> HlcTimestamp:
        """Timestamp a local or send event: greater than every timestamp seen so far."""
        physical_ms = self._clock.now_ms()
        if physical_ms > self._last.wall_ms:
            stamp = HlcTimestamp(physical_ms, 0)
        else:
            stamp = self._bumped(self._last.wall_ms, self._last.logical)
        self._last = stamp
        return stamp

    def update(self, remote: HlcTimestamp) -> HlcTimestamp:
        """Timestamp a receive event carrying ``remote``: greater than it and than ``last``."""
        if not isinstance(remote, HlcTimestamp):
            raise InvalidArgument(f"expected HlcTimestamp, got {type(remote).__name__}")
        physical_ms = self._clock.now_ms()
        if remote.wall_ms - physical_ms > self._max_offset_ms:
            raise InvalidArgument(
                f"remote timestamp is {remote.wall_ms - physical_ms} ms ahead of the local "
                f"clock (more than max_offset_ms={self._max_offset_ms})"
            )
        wall_ms = max(physical_ms, self._last.wall_ms, remote.wall_ms)
        if wall_ms == self._last.wall_ms and wall_ms == remote.wall_ms:
            stamp = self._bumped(wall_ms, max(self._last.logical, remote.logical))
        elif wall_ms == self._last.wall_ms:
            stamp = self._bumped(wall_ms, self._last.logical)
        elif wall_ms == remote.wall_ms:
            stamp = self._bumped(wall_ms, remote.logical)
        else:
            stamp = HlcTimestamp(wall_ms, 0)
        self._last = stamp
        return stamp

    @staticmethod
    def _bumped(wall_ms: int, logical: int) -> HlcTimestamp:
        if logical >= LOGICAL_MAX:
            raise Overloaded("HLC logical counter exhausted for this millisecond", retry_after_ms=1)
        return HlcTimestamp(wall_ms, logical + 1)
