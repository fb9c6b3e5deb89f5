"""The two ends of one ``TcpTransport`` connection, as asyncio protocols.

Theory of operation: a connection carries length-prefixed msgpack frames
(``blocks.core.transport.FrameKind``) and has a direction of purpose. ``ClientConnection`` is
the dialing end: it sends ``HELLO`` (its node name and optional bearer token) as soon as the
socket is up (after the TLS handshake when there is one), waits for ``WELCOME`` naming the
node it meant to reach, then pipelines ``REQUEST`` and ``ONEWAY`` frames and matches each
``REPLY`` or ``FAILURE`` to its waiting caller by request id. A greeting answered with a TLS
record means a plaintext dialer reached a TLS listener: it fails with ``Unavailable`` saying
so. ``ServerConnection`` is the listening end: it requires a ``HELLO`` within the handshake
timeout, checks the token in constant time, answers ``WELCOME``, runs the node's handler in
one task per inbound message and writes the replies.

``FramedConnection`` holds what both ends share: the connection's state
(``blocks.core.tcp_limits.ConnectionState``: greeting, open, closed), decoding (any
``PeerError`` from the decoder or from a frame in the wrong place sends ``GOAWAY`` with the
error and drops the connection), the frame limit of the state (``handshake_frame_bytes_max``
while greeting, ``frame_bytes_max`` once open), coalescing the frames written in one loop
turn into one socket write, and honouring the socket's flow control through ``drain``. A
listening-side connection also reports the bytes of its frame in progress to its owner,
which bounds their sum over all connections (``buffered_bytes_max``): the connection whose
bytes cross it is dropped with ``GOAWAY`` ``Overloaded``.

The connections know their transport only through ``ConnectionOwner``: its limits and
counters, its handler, and the hooks for the bookkeeping of connections and buffered bytes.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import logging
from typing import Any, Protocol, cast

from blocks.core.errors import (
    BlocksError,
    InvalidArgument,
    Overloaded,
    PeerError,
    Timeout,
    Unauthenticated,
    Unavailable,
)
from blocks.core.tcp_limits import ConnectionLife, ConnectionState, TcpLimits
from blocks.core.transport import (
    FrameDecoder,
    FrameKind,
    Handler,
    encode_frame,
    error_from_wire,
    error_to_wire,
)

__all__ = ["ClientConnection", "ConnectionOwner", "FramedConnection", "ServerConnection"]

logger = logging.getLogger(__name__)

# The first two bytes of a TLS handshake (0x16) or alert (0x15) record: type, major version 3.
_TLS_RECORD_STARTS = (b"\x15\x03", b"\x16\x03")


class ConnectionOwner(Protocol):
    """What a connection reads from, and reports to, the transport that made it."""

    @property
    def name(self) -> str: ...

    token: str | None
    limits: TcpLimits
    handler: Handler | None
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

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def write(self, frame: list[Any]) -> None:
        """Queue ``frame`` for the socket; ``InvalidArgument`` if it cannot be encoded.

        The first frame in a turn of the event loop leaves at once (no added latency for a
        lone request); the others written in the same turn leave together in one ``write`` at
        the end of it, so 64 pipelined requests cost two system calls, not 64.
        """
        data = encode_frame(frame, self._owner.limits.frame_bytes_max)
        if self.closed or self._transport is None:
            return
        if self._outgoing is None:
            self._outgoing = []
            asyncio.get_running_loop().call_soon(self._flush)
            self._transport.write(data)
        else:
            self._outgoing.append(data)

    def _flush(self) -> None:
        outgoing, self._outgoing = self._outgoing, None
        if outgoing and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(outgoing))

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


class ClientConnection(FramedConnection):
    """The dialing side: sends requests, matches replies to waiting callers by id."""

    def __init__(self, owner: ConnectionOwner, peer_name: str) -> None:
        super().__init__(owner)
        self._peer_name = peer_name
        self._next_id = 0
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.write([FrameKind.HELLO, self._owner.name, self._owner.token])

    def data_received(self, data: bytes) -> None:
        if self.life.state is ConnectionState.GREETING and data[:2] in _TLS_RECORD_STARTS:
            # No frame starts this way (it would declare a length over 300 MB): the listener
            # answered in TLS, most likely an alert to a dialer that should use TLS too.
            self.fail(Unavailable("the listener speaks TLS; dial it with tls_ca"))
            return
        super().data_received(data)

    def handle_frame(self, frame: list[Any]) -> None:
        kind = frame[0]
        if kind is FrameKind.WELCOME and self.life.state is ConnectionState.GREETING:
            if frame[1] != self._peer_name:
                raise PeerError(f"expected node {self._peer_name!r}, reached {frame[1]!r}")
            self.opened()
            self.ready.set_result(None)
        elif kind is FrameKind.GOAWAY:
            self._fail_all(error_from_wire(frame[1]))
            self.close()
        elif kind in (FrameKind.REPLY, FrameKind.FAILURE) and (
            self.life.state is ConnectionState.OPEN
        ):
            future = self._waiting.pop(frame[1], None)
            if future is None or future.done():
                self._owner.counters["late_replies"] += 1
            elif kind is FrameKind.REPLY:
                future.set_result(frame[2])
            else:
                future.set_exception(error_from_wire(frame[2]))
        else:
            raise PeerError(f"unexpected {kind.name} frame from a listener")

    async def request(self, message: Any, timeout_s: float) -> Any:
        """Send one request and await its reply; ``Overloaded`` at once past the bound."""
        in_flight_max = self._owner.limits.in_flight_max
        if len(self._waiting) >= in_flight_max:
            raise Overloaded(
                f"{in_flight_max} requests already in flight to {self._peer_name!r}",
                retry_after_ms=1,
            )
        self._next_id += 1
        request_id = self._next_id
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.write([FrameKind.REQUEST, request_id, message])
        self._waiting[request_id] = future
        expiry = loop.call_later(timeout_s, _expire, future, self._peer_name, timeout_s)
        try:
            await self.drain()
            return await future
        finally:
            expiry.cancel()
            self._waiting.pop(request_id, None)

    def fail(self, error: BlocksError, *, linger: bool = True) -> None:
        self._fail_all(error)
        super().fail(error, linger=linger)

    def _fail_all(self, error: BlocksError) -> None:
        if not self.ready.done():
            self.ready.set_exception(error)
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(error)
        self._waiting.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._fail_all(Unavailable(f"connection to {self._peer_name!r} lost"))
        self._owner.outbound_lost(self._peer_name, self)


def _expire(future: asyncio.Future[Any], peer_name: str, timeout_s: float) -> None:
    if not future.done():
        future.set_exception(Timeout(f"no reply from {peer_name!r} within {timeout_s} s"))


class ServerConnection(FramedConnection):
    """The listening side: authenticates the dialer, runs the handler, writes replies."""

    budgeted = True

    def __init__(self, owner: ConnectionOwner) -> None:
        super().__init__(owner)
        self._peer_name = ""  # set by an accepted HELLO: the state is OPEN from then on
        self._tasks: set[asyncio.Task[None]] = set()
        self._handshake_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        refusal = self._owner.connection_accepted(self)
        if refusal is not None:
            self.fail(refusal)
            return
        self._handshake_timer = asyncio.get_running_loop().call_later(
            self._owner.limits.handshake_timeout_s, self._maybe_expire_handshake
        )

    def _maybe_expire_handshake(self) -> None:
        if self.life.state is ConnectionState.GREETING:
            self._owner.counters["handshake_timeouts"] += 1
            self.fail(PeerError("no HELLO within the handshake timeout"))

    def handle_frame(self, frame: list[Any]) -> None:
        kind = frame[0]
        if self.life.state is ConnectionState.GREETING:
            if kind is not FrameKind.HELLO:
                raise PeerError(f"expected HELLO, got {kind.name}")
            self._handle_hello(frame[1], frame[2])
        elif kind in (FrameKind.REQUEST, FrameKind.ONEWAY):
            self._handle_message(frame)
        elif kind is FrameKind.GOAWAY:
            self.close()
        else:
            raise PeerError(f"unexpected {kind.name} frame from a dialer")

    def _handle_hello(self, peer_name: Any, token: Any) -> None:
        if not isinstance(peer_name, str) or not peer_name:
            raise PeerError("HELLO without a node name")
        expected = self._owner.token
        if expected is not None and not (
            isinstance(token, str) and hmac.compare_digest(token.encode(), expected.encode())
        ):
            self._owner.counters["unauthenticated"] += 1
            self.fail(Unauthenticated("missing or wrong bearer token"))
            return
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        self._peer_name = peer_name
        self.opened()
        self._owner.connection_opened(self)
        self.write([FrameKind.WELCOME, self._owner.name])

    def _handle_message(self, frame: list[Any]) -> None:
        handler = self._owner.handler
        is_request = frame[0] is FrameKind.REQUEST
        if handler is None or len(self._tasks) >= self._owner.limits.in_flight_max:
            self._owner.counters["refused"] += 1
            if is_request:
                refusal = (
                    Unavailable(f"node {self._owner.name!r} has no handler")
                    if handler is None
                    else Overloaded("listener in_flight_max reached", retry_after_ms=1)
                )
                self.write([FrameKind.FAILURE, frame[1], error_to_wire(refusal)])
            return
        message = frame[2] if is_request else frame[1]
        request_id = frame[1] if is_request else None
        task = asyncio.get_running_loop().create_task(self._run(handler, message, request_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, handler: Handler, message: Any, request_id: int | None) -> None:
        assert self._peer_name, "messages are handled only once the handshake is done"
        try:
            result = await handler(self._peer_name, message)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._owner.counters["handler_errors"] += 1
            if request_id is not None:
                self.write([FrameKind.FAILURE, request_id, error_to_wire(error)])
            return
        if request_id is None:
            return
        try:
            self.write([FrameKind.REPLY, request_id, result])
        except InvalidArgument as error:
            self.write([FrameKind.FAILURE, request_id, error_to_wire(error)])
        await self.drain()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        self._owner.connection_ended(self)
