"""Hybrid logical clocks: timestamps that follow wall time yet respect causality.

Theory of operation (Kulkarni et al., 2014). A timestamp is ``(wall_ms, logical)``. ``now()``
returns the wall clock when it has moved past the last timestamp, and otherwise the last
timestamp with ``logical + 1``, so timestamps from one clock strictly increase even when the
wall clock stalls or steps back. ``observe(remote)`` moves the clock past a timestamp received
from another node, so an event caused by a message is always stamped after the message.

A remote timestamp more than ``max_offset_ms`` ahead of our wall clock is refused with
``PeerError`` instead of dragging every clock in the cluster into the future. The algorithm
lives once, in ``blocks.core.hlc``; this module keeps kv's timestamp type and names.
"""

from __future__ import annotations

from typing import NamedTuple

from blocks.core.clock import Clock
from blocks.core.errors import PeerError
from blocks.core.hlc import MAX_OFFSET_MS_DEFAULT, HlcCore

__all__ = ["HlcTimestamp", "HybridLogicalClock"]


class HlcTimestamp(NamedTuple):
    """A kv timestamp. Encoded on the wire and on disk as two plain integers
    (``versions.object_to_wire``); ``logical`` is unbounded."""

    wall_ms: int
    logical: int


class HybridLogicalClock(HlcCore[HlcTimestamp]):
    """The algorithm of ``blocks.core.hlc`` over kv timestamps; a remote timestamp that came
    off the wire too far ahead is the peer's fault (``PeerError``)."""

    __slots__ = ()

    def __init__(self, clock: Clock, *, max_offset_ms: int = MAX_OFFSET_MS_DEFAULT) -> None:
        super().__init__(
            clock, HlcTimestamp, max_offset_ms=max_offset_ms, far_ahead_error=PeerError
        )

    def observe(self, remote: HlcTimestamp) -> HlcTimestamp:
        """Merge a timestamp from a message; returns the new (greater) local timestamp."""
        return self.merge(remote)
