"""The bounds of ``TcpTransport`` connections, and the state of one connection's handshake.

Theory of operation: a listener meets strangers, so what a stranger can make it hold is
bounded before anyone is trusted. Until a dialer's ``HELLO`` is accepted, a connection may
carry only frames of ``handshake_frame_bytes_max`` (a ``HELLO`` is a name and a token), at
most ``handshaking_max`` connections may be waiting for their ``HELLO``, each for at most
``handshake_timeout_s``, and the listener holds at most ``connections_max`` connections.
Once the handshake is done a frame may be as large as ``frame_bytes_max``, so each
connection holds at most one frame in progress of that size; across every connection of the
listener, the bytes of frames in progress (read, but not yet a whole frame) are bounded by
``buffered_bytes_max``. A breach closes the connection that caused it, with ``GOAWAY`` giving
the reason (then the sending side is shut and what still arrives is read and dropped for up
to ``goaway_linger_s``, so that closing over unread bytes does not reset the connection and
lose the reason), and is counted in ``TcpTransport.stats()`` (``connections_refused``,
``handshakes_refused``, ``handshake_timeouts``, ``frames_too_large_before_handshake``,
``frames_too_large``, ``buffer_budget_exceeded``).

``ConnectionState`` is where a connection is in its life; ``ConnectionLife`` holds it and
allows only the transitions in ``TRANSITIONS``: an illegal one raises and leaves the state
as it was (it would be a bug in this package, not a peer's fault).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from blocks.core.errors import InvalidArgument
from blocks.core.transport import FRAME_BYTES_MAX, FRAME_HEADER_BYTES, check_timeout

__all__ = ["TRANSITIONS", "ConnectionLife", "ConnectionState", "TcpLimits"]

HANDSHAKE_FRAME_BYTES_MAX = 4 * 1024
"""Default bound on a frame before the handshake: a ``HELLO`` is a node name and a token."""


@dataclass(frozen=True, slots=True)
class TcpLimits:
    """What one ``TcpTransport`` lets its peers make it hold (see the module docs).

    ``in_flight_max`` bounds requests in flight per connection, on both sides.
    """

    frame_bytes_max: int = FRAME_BYTES_MAX
    handshake_frame_bytes_max: int = HANDSHAKE_FRAME_BYTES_MAX
    buffered_bytes_max: int = 8 * FRAME_BYTES_MAX
    connections_max: int = 1024
    handshaking_max: int = 256
    handshake_timeout_s: float = 5.0
    in_flight_max: int = 1024
    goaway_linger_s: float = 1.0

    def __post_init__(self) -> None:
        for name in (
            "frame_bytes_max",
            "handshake_frame_bytes_max",
            "buffered_bytes_max",
            "connections_max",
            "handshaking_max",
            "in_flight_max",
        ):
            value = getattr(self, name)
            if type(value) is not int or value <= 0:
                raise InvalidArgument(f"{name} must be an int > 0, got {value!r}")
        if self.handshake_frame_bytes_max > self.frame_bytes_max:
            raise InvalidArgument("handshake_frame_bytes_max must not exceed frame_bytes_max")
        if self.buffered_bytes_max < self.frame_bytes_max + FRAME_HEADER_BYTES:
            raise InvalidArgument("buffered_bytes_max must hold at least one whole frame")
        if self.handshaking_max > self.connections_max:
            raise InvalidArgument("handshaking_max must not exceed connections_max")
        check_timeout(self.handshake_timeout_s)
        check_timeout(self.goaway_linger_s)


class ConnectionState(enum.Enum):
    """Where one connection is: greeting (``HELLO``/``WELCOME`` not yet exchanged), open for
    requests, or closed."""

    GREETING = "greeting"
    OPEN = "open"
    CLOSED = "closed"


TRANSITIONS: dict[ConnectionState, frozenset[ConnectionState]] = {
    ConnectionState.GREETING: frozenset({ConnectionState.OPEN, ConnectionState.CLOSED}),
    ConnectionState.OPEN: frozenset({ConnectionState.CLOSED}),
    ConnectionState.CLOSED: frozenset(),
}


class ConnectionLife:
    """A connection's ``ConnectionState``, changed only along ``TRANSITIONS``."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = ConnectionState.GREETING

    def to(self, target: ConnectionState) -> None:
        """Move to ``target``; ``AssertionError`` (state unchanged) if that is not allowed."""
        if target not in TRANSITIONS[self.state]:
            raise AssertionError(f"a connection cannot go from {self.state.name} to {target.name}")
        self.state = target
