"""``TcpTransport``: the ``Transport`` protocol between processes, as msgpack frames over TCP.

Theory of operation: each frame is a 4-byte big-endian length and one msgpack array
(``blocks.core.transport.FrameKind``). Connections are one-directional in purpose: the node that
dials sends ``HELLO`` (its name and optional bearer token), then requests and one-way messages;
the listening node answers ``WELCOME`` and then a ``REPLY`` or ``FAILURE`` per request id. A
node keeps one outbound connection per peer and pipelines every request on it, matching replies
by id, so N requests in flight cost one socket and no head-of-line waiting in the caller. Both
directions of a pair of nodes therefore use two connections, one dialed by each side.

Failure handling:

* A refused or broken connection is ``Unavailable``: requests waiting on it fail (they may or
  may not have run) and the next request dials again. Failed dials back off exponentially with
  jitter, from ``backoff_initial_s`` up to ``backoff_max_s``; a request waits out the backoff
  when its deadline allows and fails with ``Unavailable`` when it does not.
* A frame that is oversize (above ``frame_bytes_max``), not msgpack, or not a valid frame is a
  ``PeerError``: the receiver sends ``GOAWAY`` carrying the error and drops the connection; a
  server stays up for everyone else.
* With a ``token``, a listener rejects a ``HELLO`` whose token is missing or differs
  (``GOAWAY`` with ``Unauthenticated``, compared in constant time); the dialer raises
  ``Unauthenticated``. A peer that sends nothing for ``handshake_timeout_s`` is dropped.
* In flight per connection is bounded by ``in_flight_max`` on both sides: a caller past the
  bound gets ``Overloaded`` at once (it does not wait in a hidden queue), and a listener answers
  ``Overloaded`` to requests past it (one-way messages past it are dropped and counted).

Without ``listen`` the transport is client-only: it dials peers and never accepts, which is how
a Python client reaches a node on the same fast path the nodes use among themselves. The
transport runs on whatever asyncio loop is running, uvloop included.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import logging
import random
from typing import Any, cast

from blocks.core.errors import (
    BlocksError,
    Cancelled,
    FailedPrecondition,
    InvalidArgument,
    Overloaded,
    PeerError,
    Timeout,
    Unauthenticated,
    Unavailable,
)
from blocks.core.transport import (
    DEFAULT_TIMEOUT_S,
    FRAME_BYTES_MAX,
    FrameDecoder,
    FrameKind,
    Handler,
    check_timeout,
    encode_frame,
    error_from_wire,
    error_to_wire,
)

__all__ = ["TcpTransport"]

logger = logging.getLogger(__name__)

Address = tuple[str, int]


class _FramedConnection(asyncio.Protocol):
    """Frame decoding, flow-controlled writes and protocol-error handling for one socket."""

    def __init__(self, owner: TcpTransport) -> None:
        self._owner = owner
        self._decoder = FrameDecoder(owner.frame_bytes_max)
        self._transport: asyncio.Transport | None = None
        self._writable: asyncio.Event = asyncio.Event()
        self._writable.set()
        self._outgoing: list[bytes] | None = None  # None: nothing written in this loop turn
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._decoder.append(data)
            while not self.closed and (frame := self._decoder.next_frame()) is not None:
                self.handle_frame(frame)
        except PeerError as error:
            self.fail(error)

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
        data = encode_frame(frame, self._owner.frame_bytes_max)
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

    def fail(self, error: BlocksError) -> None:
        """Tell the peer why (best effort) and drop the connection."""
        if isinstance(error, PeerError):
            self._owner.counters["peer_errors"] += 1
            logger.debug("dropping connection: %s", error)
        if not self.closed:
            self.write([FrameKind.GOAWAY, error_to_wire(error)])
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._transport is not None:
                self._flush()  # a GOAWAY queued just before still leaves
                self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._writable.set()


class _ClientConnection(_FramedConnection):
    """The dialing side: sends requests, matches replies to waiting callers by id."""

    def __init__(self, owner: TcpTransport, peer_name: str) -> None:
        super().__init__(owner)
        self._peer_name = peer_name
        self._next_id = 0
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.write([FrameKind.HELLO, self._owner.name, self._owner.token])

    def handle_frame(self, frame: list[Any]) -> None:
        kind = frame[0]
        if kind is FrameKind.WELCOME and not self.ready.done():
            if frame[1] != self._peer_name:
                raise PeerError(f"expected node {self._peer_name!r}, reached {frame[1]!r}")
            self.ready.set_result(None)
        elif kind is FrameKind.GOAWAY:
            self._fail_all(error_from_wire(frame[1]))
            self.close()
        elif kind in (FrameKind.REPLY, FrameKind.FAILURE) and self.ready.done():
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
        if len(self._waiting) >= self._owner.in_flight_max:
            raise Overloaded(
                f"{self._owner.in_flight_max} requests already in flight to {self._peer_name!r}",
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

    def fail(self, error: BlocksError) -> None:
        self._fail_all(error)
        super().fail(error)

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
        self._owner._forget(self._peer_name, self)


def _expire(future: asyncio.Future[Any], peer_name: str, timeout_s: float) -> None:
    if not future.done():
        future.set_exception(Timeout(f"no reply from {peer_name!r} within {timeout_s} s"))


class _ServerConnection(_FramedConnection):
    """The listening side: authenticates the dialer, runs the handler, writes replies."""

    def __init__(self, owner: TcpTransport) -> None:
        super().__init__(owner)
        self._peer_name: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._handshake_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._owner.counters["connections_accepted"] += 1
        self._owner._accepted.add(self)
        self._handshake_timer = asyncio.get_running_loop().call_later(
            self._owner.handshake_timeout_s, self._maybe_expire_handshake
        )

    def _maybe_expire_handshake(self) -> None:
        if self._peer_name is None:
            self.fail(PeerError("no HELLO within the handshake timeout"))

    def handle_frame(self, frame: list[Any]) -> None:
        kind = frame[0]
        if self._peer_name is None:
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
        self.write([FrameKind.WELCOME, self._owner.name])

    def _handle_message(self, frame: list[Any]) -> None:
        handler = self._owner.handler
        is_request = frame[0] is FrameKind.REQUEST
        if handler is None or len(self._tasks) >= self._owner.in_flight_max:
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
        assert self._peer_name is not None
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
        self._owner._accepted.discard(self)


class TcpTransport:
    """A ``Transport`` over TCP (see module docs). Call ``start()`` (or use ``async with``)
    before serving; a client-only transport (``listen=None``) needs no ``start()``.

    ``peers`` maps node names to ``(host, port)``; ``add_peer`` changes them later. ``token``
    is the bearer token this node presents when dialing and, when listening, requires.
    """

    def __init__(
        self,
        name: str,
        listen: Address | None = ("127.0.0.1", 0),
        peers: dict[str, Address] | None = None,
        token: str | None = None,
        *,
        frame_bytes_max: int = FRAME_BYTES_MAX,
        in_flight_max: int = 1024,
        connect_timeout_s: float = 2.0,
        handshake_timeout_s: float = 5.0,
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"node name must be a non-empty str, got {name!r}")
        if token is not None and (not isinstance(token, str) or not token):
            raise InvalidArgument("token must be a non-empty str or None")
        if frame_bytes_max <= 0 or in_flight_max <= 0:
            raise InvalidArgument("frame_bytes_max and in_flight_max must be > 0")
        if not 0 < backoff_initial_s <= backoff_max_s:
            raise InvalidArgument("need 0 < backoff_initial_s <= backoff_max_s")
        self._name = name
        self._listen = listen
        self._peers: dict[str, Address] = dict(peers or {})
        self.token = token
        self.frame_bytes_max = frame_bytes_max
        self.in_flight_max = in_flight_max
        self.connect_timeout_s = check_timeout(connect_timeout_s)
        self.handshake_timeout_s = check_timeout(handshake_timeout_s)
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._rng = rng or random.Random()
        self.handler: Handler | None = None
        self.counters: collections.Counter[str] = collections.Counter()
        self._server: asyncio.Server | None = None
        self._accepted: set[_ServerConnection] = set()
        self._outbound: dict[str, _ClientConnection] = {}
        self._dial_locks: dict[str, asyncio.Lock] = {}
        self._retry_at: dict[str, tuple[int, float]] = {}  # name -> (failures, loop time)
        self._closed = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def address(self) -> Address | None:
        """Where this node listens (the real port when bound to port 0), once started."""
        if self._server is None or not self._server.sockets:
            return None
        host, port = self._server.sockets[0].getsockname()[:2]
        return (host, port)

    async def start(self) -> None:
        """Start listening (no-op for a client-only transport, or when already started)."""
        self._check_open()
        if self._listen is not None and self._server is None:
            host, port = self._listen
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(lambda: _ServerConnection(self), host, port)

    async def __aenter__(self) -> TcpTransport:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def add_peer(self, name: str, address: Address) -> None:
        """Set where node ``name`` listens; a connection to its old address is dropped."""
        self._peers[name] = address
        connection = self._outbound.pop(name, None)
        if connection is not None:
            connection.close()
        self._retry_at.pop(name, None)

    def serve(self, handler: Handler) -> None:
        self._check_open()
        self.handler = handler

    def stats(self) -> dict[str, int]:
        """Counters: peer_errors, unauthenticated, refused, handler_errors, late_replies,
        connections_accepted, dials, dial_failures, oneway_dropped."""
        return dict(self.counters)

    async def request(self, dest: str, message: Any, timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
        self._check_open()
        timeout_s = check_timeout(timeout_s)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        connection = self._outbound.get(dest)
        if connection is None or connection.closed:
            connection = await self._connect(dest, deadline)
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise Timeout(f"no reply from {dest!r} within {timeout_s} s")
        return await connection.request(message, remaining)

    async def send(self, dest: str, message: Any) -> None:
        self._check_open()
        try:
            connection = self._outbound.get(dest)
            if connection is None or connection.closed:
                loop = asyncio.get_running_loop()
                connection = await self._connect(dest, loop.time() + self.connect_timeout_s)
        except (Unavailable, Timeout, Unauthenticated, PeerError):
            self.counters["oneway_dropped"] += 1
            return
        connection.write([FrameKind.ONEWAY, message])
        await connection.drain()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        for connection in list(self._outbound.values()):
            connection.fail(Cancelled(f"transport {self._name!r} closed"))
        self._outbound.clear()
        for accepted in list(self._accepted):
            accepted.close()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            except TimeoutError:  # pragma: no cover - only with a stuck socket
                logger.warning("listener of %r did not close within 2 s", self._name)

    def _check_open(self) -> None:
        if self._closed:
            raise FailedPrecondition(f"transport {self._name!r} is closed")

    def _forget(self, dest: str, connection: _ClientConnection) -> None:
        if self._outbound.get(dest) is connection:
            del self._outbound[dest]

    async def _connect(self, dest: str, deadline: float) -> _ClientConnection:
        """Return an open, greeted connection to ``dest``, dialing at most once at a time."""
        if dest not in self._peers:
            raise Unavailable(f"unknown node {dest!r}")
        loop = asyncio.get_running_loop()
        lock = self._dial_locks.setdefault(dest, asyncio.Lock())
        try:
            async with asyncio.timeout_at(deadline):
                async with lock:
                    connection = self._outbound.get(dest)
                    if connection is not None and not connection.closed:
                        return connection
                    failures, retry_at = self._retry_at.get(dest, (0, 0.0))
                    if retry_at > deadline:
                        raise Unavailable(f"node {dest!r} unreachable; retrying after backoff")
                    if retry_at > loop.time():
                        await asyncio.sleep(retry_at - loop.time())
                    return await self._dial(dest, failures)
        except TimeoutError:
            raise Timeout(f"could not reach {dest!r} before the deadline") from None

    async def _dial(self, dest: str, failures: int) -> _ClientConnection:
        host, port = self._peers[dest]
        loop = asyncio.get_running_loop()
        self.counters["dials"] += 1
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, connection = await loop.create_connection(
                    lambda: _ClientConnection(self, dest), host, port
                )
                await connection.ready
        except (OSError, TimeoutError, Unavailable) as error:
            self.counters["dial_failures"] += 1
            delay_s = min(self._backoff_max_s, self._backoff_initial_s * 2.0**failures)
            delay_s *= 0.5 + 0.5 * self._rng.random()
            self._retry_at[dest] = (failures + 1, loop.time() + delay_s)
            raise Unavailable(f"cannot reach {dest!r} at {host}:{port}: {error}") from None
        self._retry_at.pop(dest, None)
        if self._closed:  # closed while we were dialing
            connection.fail(Cancelled(f"transport {self._name!r} closed"))
            raise Cancelled(f"transport {self._name!r} closed")
        self._outbound[dest] = connection
        return connection
