"""What both ends of a ``TcpTransport`` connection share: ``FramedConnection``, and the
``ConnectionOwner`` protocol through which a connection sees its transport.

Theory of operation: a ``FramedConnection`` is an asyncio protocol with an explicit state
(``blocks.core.net.limits.ConnectionState``: greeting, open, closed). It decodes frames with
the limit of its state (``handshake_frame_bytes_max`` while greeting, ``frame_bytes_max``
once open); any ``PeerError`` from the decoder or from a frame in the wrong place sends
``GOAWAY`` with the error and drops the connection, lingering so the reason arrives. It
gathers the frames written in one loop turn into one socket write (``writelines``, at the
end of the turn) and honours the socket's flow control through ``drain``. A listening-side connection (``budgeted``) reports
the bytes of its frame in progress to its owner, which bounds their sum over all
connections (``buffered_bytes_max``): the connection whose bytes cross it is dropped with
``GOAWAY`` ``Overloaded``. The two ends, ``ClientConnection`` and ``ServerConnection``, are in
``blocks.core.net.connection``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING, Any, Protocol, cast

from blocks.core.errors import BlocksError, Overloaded, PeerError
from blocks.core.net.limits import ConnectionLife, ConnectionState, TcpLimits
from blocks.core.transport import (
    FrameDecoder,
    FrameKind,
    Handler,
    encode_frame_parts,
    error_to_wire,
)

if TYPE_CHECKING:
    from blocks.core.net.connection import ClientConnection, ServerConnection

__all__ = ["ConnectionOwner", "FramedConnection"]

logger = logging.getLogger(__name__)


class ConnectionOwner(Protocol):
    """What a connection reads from, and reports to, the transport that made it."""

    @property
    def name(self) -> str: ...

    token: str | None
    limits: TcpLimits
    handler: Handler | None
    handler_inline: bool
    counters: collections.Counter[str]

    def connection_accepted(self, connection: ServerConnection) -> BlocksError | None:
        """A listening-side connection is up: counted, and closed with the transport; or the
        error to refuse it with when a connection bound is reached."""

    def connection_opened(self, connection: ServerConnection) -> None:
        """A listening-side connection finished its handshake."""

    def connection_ended(self, connection: ServerConnection) -> None:
        """A listening-side connection is gone."""

    def buffer_changed(self, delta_bytes: int) -> int:
        """Add ``delta_bytes`` to the bytes of frames in progress; return the new total."""

    def outbound_lost(self, peer_name: str, connection: ClientConnection) -> None:
        """The dialed connection to ``peer_name`` is gone; the next request dials again."""


class FramedConnection(asyncio.Protocol):
    """Frame decoding, flow-controlled writes and protocol-error handling for one socket."""

    budgeted = False  # True: this connection's frames in progress count against the owner's

    def __init__(self, owner: ConnectionOwner) -> None:
        self._owner = owner
        self.life = ConnectionLife()
        self._decoder = FrameDecoder(owner.limits.handshake_frame_bytes_max)
        self._buffered = 0  # bytes of this connection reported to the owner's budget
        self._transport: asyncio.Transport | None = None
        self._writable: asyncio.Event = asyncio.Event()
        self._writable.set()
        self._outgoing: list[bytes] | None = None  # None: nothing written in this loop turn
        self._linger_timer: asyncio.TimerHandle | None = None

    @property
    def closed(self) -> bool:
        return self.life.state is ConnectionState.CLOSED

    @property
    def buffered_bytes(self) -> int:
        """Bytes of the frame in progress (and of any whole frames not yet handled)."""
        return self._decoder.buffered_bytes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self._decoder.append(data)
            while not self.closed and (frame := self._decoder.next_frame()) is not None:
                self.handle_frame(frame)
        except PeerError as error:
            self.fail(self._with_state(error))
            return
        if self.budgeted and not self.closed:
            self._report_buffered()

    def _with_state(self, error: PeerError) -> PeerError:
        """Count a breached frame limit, naming the limit of the state it happened in."""
        if error.details.get("breach") != "frame_too_large":
            return error
        if self.life.state is ConnectionState.GREETING:
            self._owner.counters["frames_too_large_before_handshake"] += 1
            return PeerError(f"{error} before the handshake", **error.details)
        self._owner.counters["frames_too_large"] += 1
        return error

    def _report_buffered(self) -> None:
        delta = self._decoder.buffered_bytes - self._buffered
        if not delta:
            return
        self._buffered += delta
        total = self._owner.buffer_changed(delta)
        budget = self._owner.limits.buffered_bytes_max
        if delta > 0 and total > budget:
            self._owner.counters["buffer_budget_exceeded"] += 1
            self.fail(
                Overloaded(
                    f"the listener holds {total} bytes of frames in progress, over its budget "
                    f"of {budget}; send again later",
                    retry_after_ms=100,
                )
            )

    def _release_buffered(self) -> None:
        if self._buffered:
            self._owner.buffer_changed(-self._buffered)
            self._buffered = 0

    def opened(self) -> None:
        """The handshake is done: larger frames are allowed from now on."""
        self.life.to(ConnectionState.OPEN)
        self._decoder.frame_bytes_max = self._owner.limits.frame_bytes_max

    def handle_frame(self, frame: list[Any]) -> None:
        raise NotImplementedError

    @property
    def writable(self) -> bool:
        """False while the socket's buffer is over its high-water mark (``drain`` waits)."""
        return self._writable.is_set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def write(self, frame: list[Any]) -> None:
        """Queue ``frame`` for the socket; ``InvalidArgument`` if it cannot be encoded.

        Every frame written in one turn of the event loop leaves in one ``writelines`` at the
        end of it (a ``call_soon``: the lone request waits one turn, no timer), so a turn's
        replies and pipelined requests on a connection cost one system call, not one each.
        """
        parts = encode_frame_parts(frame, self._owner.limits.frame_bytes_max)
        if self.closed or self._transport is None:
            return
        outgoing = self._outgoing
        if outgoing is None:
            self._outgoing = outgoing = []
            asyncio.get_running_loop().call_soon(self._flush)
        outgoing += parts

    def _flush(self) -> None:
        outgoing, self._outgoing = self._outgoing, None
        if outgoing and self._transport is not None and not self._transport.is_closing():
            if len(outgoing) == 1:
                self._transport.write(outgoing[0])
            else:
                self._transport.writelines(outgoing)

    async def drain(self) -> None:
        if not self._writable.is_set():
            await self._writable.wait()

    def fail(self, error: BlocksError, *, linger: bool = True) -> None:
        """Tell the peer why and drop the connection (see ``close`` for ``linger``)."""
        if isinstance(error, PeerError):
            self._owner.counters["peer_errors"] += 1
            logger.debug("dropping connection: %s", error)
        if not self.closed:
            self.write([FrameKind.GOAWAY, error_to_wire(error)])
        self.close(linger=linger)

    def close(self, *, linger: bool = False) -> None:
        """Close; idempotent. With ``linger`` (after a ``GOAWAY``), shut only the sending side
        and drop what still arrives until the peer closes or ``goaway_linger_s`` passes:
        closing a socket over unread bytes resets it, and the peer would lose the reason."""
        if self.closed:
            if not linger and self._linger_timer is not None and self._transport is not None:
                self._linger_timer.cancel()  # closing for good (the transport is closing)
                self._transport.close()
            return
        self.life.to(ConnectionState.CLOSED)
        self._release_buffered()
        if self._transport is None:
            return
        self._flush()  # a GOAWAY queued just before still leaves
        if linger and self._transport.can_write_eof():
            self._transport.write_eof()
            self._linger_timer = asyncio.get_running_loop().call_later(
                self._owner.limits.goaway_linger_s, self._transport.close
            )
        else:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.life.to(ConnectionState.CLOSED)
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        self._release_buffered()
        self._writable.set()
