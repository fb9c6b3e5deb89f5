"""``TcpTransport``: the ``Transport`` protocol between processes, as msgpack frames over TCP.

Theory of operation: each frame is a 4-byte big-endian length and one msgpack array
(``blocks.core.transport.FrameKind``). Connections are one-directional in purpose: the node that
dials sends ``HELLO`` (its name and optional bearer token), then requests and one-way messages;
the listening node answers ``WELCOME`` and then a ``REPLY`` or ``FAILURE`` per request id (the
two ends are ``blocks.core.net.connection``). A node keeps one outbound connection per peer and
pipelines every request on it, matching replies by id, so N requests in flight cost one socket
and no head-of-line waiting in the caller. Both directions of a pair of nodes therefore use two
connections, one dialed by each side. This module owns the connections: the listener, the dials
with their backoff, and the bookkeeping that closes everything on ``close()``.

Failure handling:

* A refused or broken connection is ``Unavailable``: requests waiting on it fail (they may or
  may not have run) and the next request dials again. Failed dials back off exponentially with
  jitter, from ``backoff_initial_s`` up to ``backoff_max_s``; a request waits out the backoff
  when its deadline allows and fails with ``Unavailable`` when it does not.
* A frame that is oversize (above ``frame_bytes_max``, or above ``handshake_frame_bytes_max``
  before the handshake), not msgpack, or not a valid frame is a ``PeerError``: the receiver
  sends ``GOAWAY`` carrying the error and drops the connection; a server stays up for
  everyone else.
* What strangers can make a listener hold is bounded by ``TcpLimits``
  (``blocks.core.net.limits``): connections, connections still greeting, the frame size
  before the handshake, and the bytes of frames in progress over all connections. A breach
  drops the connection that caused it with ``GOAWAY`` (``Overloaded`` for a full budget,
  ``PeerError`` for a frame too large) and is counted in ``stats()``; ``buffered_bytes`` is
  the budget in use.
* With a ``token``, a listener rejects a ``HELLO`` whose token is missing or differs
  (``GOAWAY`` with ``Unauthenticated``, compared in constant time); the dialer raises
  ``Unauthenticated``. A peer that sends nothing for ``handshake_timeout_s`` is dropped.
* In flight per connection is bounded by ``in_flight_max`` on both sides: a caller past the
  bound gets ``Overloaded`` at once (it does not wait in a hidden queue), and a listener answers
  ``Overloaded`` to requests past it (one-way messages past it are dropped and counted).

TLS (optional, so that the bearer token and the data never travel in clear): ``tls`` is the
listener's ``ssl.SSLContext`` (``blocks.core.net.tls.server_tls_context`` builds one from PEM),
and ``tls_ca`` makes every dial a TLS connection that accepts only a listener whose certificate
that CA signed and that names the dialed host (or ``tls_server_name``); it is PEM bytes, a path,
or a ready client context (for client certificates). The TLS handshake happens before
``HELLO`` and is bounded by ``handshake_timeout_s`` on the listener and ``connect_timeout_s`` on
the dialer. A TLS listener drops a plaintext dialer during the handshake, and a dialer that
cannot verify the listener drops the connection before sending anything: both fail the
request with ``Unavailable`` (counted as ``tls_failures`` on the dialer), as any unreachable
node does. A node that both listens and dials in a TLS cluster sets both.

Without ``listen`` the transport is client-only: it dials peers and never accepts, which is how
a Python client reaches a node on the same fast path the nodes use among themselves. The
transport runs on whatever asyncio loop is running, uvloop included.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import random
import ssl
from typing import Any

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
from blocks.core.net.connection import ClientConnection, ServerConnection
from blocks.core.net.limits import TcpLimits
from blocks.core.net.tls import check_tls_context, client_tls_context
from blocks.core.rpc import PemSource
from blocks.core.transport import (
    DEFAULT_TIMEOUT_S,
    FrameKind,
    Handler,
    check_timeout,
)

__all__ = ["Address", "TcpLimits", "TcpTransport"]

logger = logging.getLogger(__name__)

Address = tuple[str, int]

TLS_SHUTDOWN_TIMEOUT_S = 2.0
"""How long closing a TLS connection waits for the peer's close_notify."""


class TcpTransport:
    """A ``Transport`` over TCP (see module docs). Call ``start()`` (or use ``async with``)
    before serving; a client-only transport (``listen=None``) needs no ``start()``.

    ``peers`` maps node names to ``(host, port)``; ``add_peer`` changes them later. ``token``
    is the bearer token this node presents when dialing and, when listening, requires.
    ``tls`` (listener context), ``tls_ca`` (PEM bytes, a path, or a client context) and
    ``tls_server_name`` turn on TLS as the module docs describe; ``InvalidArgument`` if the
    material cannot be loaded. ``limits`` bounds what peers can make it hold (``TcpLimits``);
    ``frame_bytes_max``, ``in_flight_max`` and ``handshake_timeout_s``, when given, replace
    those fields of it.
    """

    def __init__(
        self,
        name: str,
        listen: Address | None = ("127.0.0.1", 0),
        peers: dict[str, Address] | None = None,
        token: str | None = None,
        *,
        limits: TcpLimits | None = None,
        frame_bytes_max: int | None = None,
        in_flight_max: int | None = None,
        connect_timeout_s: float = 2.0,
        handshake_timeout_s: float | None = None,
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 2.0,
        rng: random.Random | None = None,
        tls: ssl.SSLContext | None = None,
        tls_ca: PemSource | ssl.SSLContext | None = None,
        tls_server_name: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"node name must be a non-empty str, got {name!r}")
        if token is not None and (not isinstance(token, str) or not token):
            raise InvalidArgument("token must be a non-empty str or None")
        self.limits = _limits(limits, frame_bytes_max, in_flight_max, handshake_timeout_s)
        if not 0 < backoff_initial_s <= backoff_max_s:
            raise InvalidArgument("need 0 < backoff_initial_s <= backoff_max_s")
        self._name = name
        self._listen = listen
        self._peers: dict[str, Address] = dict(peers or {})
        self.token = token
        self.connect_timeout_s = check_timeout(connect_timeout_s)
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._rng = rng or random.Random()
        self._tls_server = None if tls is None else check_tls_context(tls, server_side=True)
        self._tls_client = _client_context(tls_ca)
        if tls_server_name is not None and (self._tls_client is None or not tls_server_name):
            raise InvalidArgument("tls_server_name needs tls_ca and must be non-empty")
        self._tls_server_name = tls_server_name
        self.handler: Handler | None = None
        self.handler_inline = False
        self.counters: collections.Counter[str] = collections.Counter()
        self._server: asyncio.Server | None = None
        self._accepted: set[ServerConnection] = set()
        self._greeting: set[ServerConnection] = set()  # accepted, handshake not yet done
        self.buffered_bytes = 0  # of frames in progress on accepted connections
        self._outbound: dict[str, ClientConnection] = {}
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
            tls_options: dict[str, Any] = {}
            if self._tls_server is not None:
                tls_options = {
                    "ssl": self._tls_server,
                    "ssl_handshake_timeout": self.limits.handshake_timeout_s,
                    "ssl_shutdown_timeout": TLS_SHUTDOWN_TIMEOUT_S,
                }
            self._server = await loop.create_server(
                lambda: ServerConnection(self), host, port, **tls_options
            )

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

    def serve(self, handler: Handler, *, inline: bool = False) -> None:
        self._check_open()
        if type(inline) is not bool:
            raise InvalidArgument("inline must be a bool")
        self.handler = handler
        self.handler_inline = inline

    def stats(self) -> dict[str, int]:
        """Counters: peer_errors, unauthenticated, refused, handler_errors, late_replies,
        connections_accepted, dials, dial_failures, tls_failures, oneway_dropped, and the
        limit breaches the module docs name; gauges: connections, connections_greeting,
        buffered_bytes."""
        return {
            **self.counters,
            "connections": len(self._accepted),
            "connections_greeting": len(self._greeting),
            "buffered_bytes": self.buffered_bytes,
        }

    async def request(self, dest: str, message: Any, timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
        self._check_open()
        timeout_s = check_timeout(timeout_s)
        connection = self._outbound.get(dest)
        if connection is not None and not connection.closed:
            return await connection.request(message, timeout_s)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
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

    def send_nowait(self, dest: str, message: Any) -> bool:
        """``send`` without waiting: True when ``message`` went out (in this loop turn's
        write) on an open connection to ``dest`` that takes writes; False, and nothing sent,
        when ``send`` would first have to dial or wait for the socket. Raises as ``send``."""
        self._check_open()
        connection = self._outbound.get(dest)
        if connection is None or connection.closed or not connection.writable:
            return False
        connection.write([FrameKind.ONEWAY, message])
        return True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        for connection in list(self._outbound.values()):
            connection.fail(Cancelled(f"transport {self._name!r} closed"), linger=False)
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

    # --- hooks for the connections (blocks.core.net.framing.ConnectionOwner) --------------

    def connection_accepted(self, connection: ServerConnection) -> BlocksError | None:
        limits = self.limits
        if len(self._accepted) >= limits.connections_max:
            self.counters["connections_refused"] += 1
            return Overloaded(f"{limits.connections_max} connections open (connections_max)")
        if len(self._greeting) >= limits.handshaking_max:
            self.counters["handshakes_refused"] += 1
            return Overloaded(f"{limits.handshaking_max} connections greeting (handshaking_max)")
        self.counters["connections_accepted"] += 1
        self._accepted.add(connection)
        self._greeting.add(connection)
        return None

    def connection_opened(self, connection: ServerConnection) -> None:
        self._greeting.discard(connection)

    def connection_ended(self, connection: ServerConnection) -> None:
        self._accepted.discard(connection)
        self._greeting.discard(connection)

    def buffer_changed(self, delta_bytes: int) -> int:
        self.buffered_bytes += delta_bytes
        assert self.buffered_bytes >= 0, "released more buffered bytes than were reported"
        return self.buffered_bytes

    def outbound_lost(self, peer_name: str, connection: ClientConnection) -> None:
        if self._outbound.get(peer_name) is connection:
            del self._outbound[peer_name]

    async def _connect(self, dest: str, deadline: float) -> ClientConnection:
        """Return an open, greeted connection to ``dest``, dialing at most once at a time.

        The dial's deadlines are bound to a task (``asyncio.timeout``): a caller outside any
        task (a handler served inline, before its first suspension) dials in a task of its own.
        """
        if asyncio.current_task() is None:
            loop = asyncio.get_running_loop()
            return await loop.create_task(self._connect_in_task(dest, deadline))
        return await self._connect_in_task(dest, deadline)

    async def _connect_in_task(self, dest: str, deadline: float) -> ClientConnection:
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

    async def _dial(self, dest: str, failures: int) -> ClientConnection:
        host, port = self._peers[dest]
        loop = asyncio.get_running_loop()
        self.counters["dials"] += 1
        tls_options: dict[str, Any] = {}
        if self._tls_client is not None:
            tls_options = {
                "ssl": self._tls_client,
                "server_hostname": self._tls_server_name or host,
                "ssl_handshake_timeout": self.connect_timeout_s,
                "ssl_shutdown_timeout": TLS_SHUTDOWN_TIMEOUT_S,
            }
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, connection = await loop.create_connection(
                    lambda: ClientConnection(self, dest), host, port, **tls_options
                )
                await connection.ready
        except (OSError, TimeoutError, Unavailable) as error:
            self.counters["dial_failures"] += 1
            if isinstance(error, ssl.SSLError):
                self.counters["tls_failures"] += 1
            delay_s = min(self._backoff_max_s, self._backoff_initial_s * 2.0**failures)
            delay_s *= 0.5 + 0.5 * self._rng.random()
            self._retry_at[dest] = (failures + 1, loop.time() + delay_s)
            raise Unavailable(f"cannot reach {dest!r} at {host}:{port}: {error}") from None
        self._retry_at.pop(dest, None)
        if self._closed:  # closed while we were dialing
            connection.fail(Cancelled(f"transport {self._name!r} closed"), linger=False)
            raise Cancelled(f"transport {self._name!r} closed")
        self._outbound[dest] = connection
        return connection


def _limits(
    limits: TcpLimits | None,
    frame_bytes_max: int | None,
    in_flight_max: int | None,
    handshake_timeout_s: float | None,
) -> TcpLimits:
    """``limits`` (default ``TcpLimits()``) with the fields given one by one replaced."""
    base = limits or TcpLimits()
    changes: dict[str, Any] = {}
    if frame_bytes_max is not None:
        changes["frame_bytes_max"] = frame_bytes_max
        changes["handshake_frame_bytes_max"] = min(base.handshake_frame_bytes_max, frame_bytes_max)
        changes["buffered_bytes_max"] = max(base.buffered_bytes_max, 2 * frame_bytes_max)
    if in_flight_max is not None:
        changes["in_flight_max"] = in_flight_max
    if handshake_timeout_s is not None:
        changes["handshake_timeout_s"] = handshake_timeout_s
    return dataclasses.replace(base, **changes) if changes else base


def _client_context(tls_ca: PemSource | ssl.SSLContext | None) -> ssl.SSLContext | None:
    if tls_ca is None:
        return None
    if isinstance(tls_ca, ssl.SSLContext):
        return check_tls_context(tls_ca, server_side=False)
    return client_tls_context(tls_ca)
