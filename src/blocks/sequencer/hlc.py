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
(48 bits of milliseconds, 16 of counter); overflowing it raises ``Overloaded``. The algorithm
lives once, in ``blocks.core.hlc``; this module keeps the sequencer's timestamp type.
"""

from __future__ import annotations

from dataclasses import dataclass

from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import InvalidArgument
from blocks.core.hlc import HlcCore

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


class HybridLogicalClock(HlcCore[HlcTimestamp]):
    """One node's HLC (the algorithm of ``blocks.core.hlc``) over 64-bit-packable timestamps.
    Not thread-safe."""

    __slots__ = ()

    def __init__(self, *, clock: Clock | None = None, max_offset_ms: int = 500) -> None:
        super().__init__(
            clock or SystemClock(),
            HlcTimestamp,
            max_offset_ms=max_offset_ms,
            logical_max=LOGICAL_MAX,
            far_ahead_error=InvalidArgument,
        )

    def update(self, remote: HlcTimestamp) -> HlcTimestamp:
        """Timestamp a receive event carrying ``remote``: greater than it and than ``last``."""
        if not isinstance(remote, HlcTimestamp):
            raise InvalidArgument(f"expected HlcTimestamp, got {type(remote).__name__}")
        return self.merge(remote)
