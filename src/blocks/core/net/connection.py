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

Both ends are ``blocks.core.net.framing.FramedConnection`` (state, decoding with the limit
of the state, ``GOAWAY`` on bad input, the budget of bytes in progress, coalesced writes, flow
control) and know their transport only through ``ConnectionOwner``: its limits and counters,
its handler, and the hooks for the bookkeeping of connections and buffered bytes.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from blocks.core.errors import (
    BlocksError,
    InvalidArgument,
    Overloaded,
    PeerError,
    Timeout,
    Unauthenticated,
    Unavailable,
)
from blocks.core.net.framing import ConnectionOwner, FramedConnection
from blocks.core.net.limits import ConnectionState
from blocks.core.transport import FrameKind, Handler, error_from_wire, error_to_wire

__all__ = ["ClientConnection", "ConnectionOwner", "FramedConnection", "ServerConnection"]

# The first two bytes of a TLS handshake (0x16) or alert (0x15) record: type, major version 3.
_TLS_RECORD_STARTS = (b"\x15\x03", b"\x16\x03")


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
