"""Hybrid logical clocks: timestamps that follow wall time yet respect causality.

Theory of operation (Kulkarni et al., 2014). A timestamp is ``(wall_ms, logical)``. ``now()``
returns the wall clock when it has moved past the last timestamp, and otherwise the last
timestamp with ``logical + 1``, so timestamps from one clock strictly increase even when the
wall clock stalls or steps back. ``observe(remote)`` moves the clock past a timestamp received
from another node, so an event caused by a message is always stamped after the message.

A remote timestamp more than ``max_offset_ms`` ahead of our wall clock is refused with
``PeerError`` instead of dragging every clock in the cluster into the future.
"""

from __future__ import annotations

from typing import NamedTuple

from blocks.core.clock import Clock
from blocks.core.errors import InvalidArgument, PeerError

__all__ = ["HlcTimestamp", "HybridLogicalClock"]

MAX_OFFSET_MS_DEFAULT = 500


class HlcTimestamp(NamedTuple):
    wall_ms: int
    logical: int


class HybridLogicalClock:
    """Not thread-safe: one per node core, driven by one loop."""

    __slots__ = ("_clock", "_last", "max_offset_ms")

    def __init__(self, clock: Clock, *, max_offset_ms: int = MAX_OFFSET_MS_DEFAULT) -> None:
        if max_offset_ms < 0:
            raise InvalidArgument("max_offset_ms must be >= 0")
        self._clock = clock
        self._last = HlcTimestamp(0, 0)
        self.max_offset_ms = max_offset_ms

    def now(self) -> HlcTimestamp:
        """A timestamp greater than every one this clock has returned or observed."""
        wall_ms = self._clock.now_ms()
        if wall_ms > self._last.wall_ms:
            self._last = HlcTimestamp(wall_ms, 0)
        else:
            self._last = HlcTimestamp(self._last.wall_ms, self._last.logical + 1)
        return self._last

    def observe(self, remote: HlcTimestamp) -> HlcTimestamp:
        """Merge a timestamp from a message; returns the new (greater) local timestamp."""
        wall_ms = self._clock.now_ms()
        if remote.wall_ms - wall_ms > self.max_offset_ms:
            raise PeerError(
                f"remote timestamp is {remote.wall_ms - wall_ms} ms ahead of the local clock"
            )
        top_wall = max(wall_ms, self._last.wall_ms, remote.wall_ms)
        if top_wall == self._last.wall_ms == remote.wall_ms:
            logical = max(self._last.logical, remote.logical) + 1
        elif top_wall == self._last.wall_ms:
            logical = self._last.logical + 1
        elif top_wall == remote.wall_ms:
            logical = remote.logical + 1
        else:
            logical = 0
        self._last = HlcTimestamp(top_wall, logical)
        return self._last
