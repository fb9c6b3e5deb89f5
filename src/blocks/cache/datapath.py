"""The cache's data path: get, put, delete and multi-get as msgpack frames over TCP.

Theory of operation
-------------------
gRPC stays the node's public, language-neutral API (and carries membership), but a data call
through it costs far more than the cache lookup it wraps: a protobuf message, HTTP/2 frames
and a task per call on each side. The data path moves only the four data calls onto the
library's own framed TCP (``blocks.core.tcp_transport.TcpTransport``): a 4-byte length and a
msgpack array per frame, a ``HELLO``/``WELCOME`` handshake with the bearer token (the client
also learns it reached the node it meant: the listener names itself), and request ids, so a
client keeps *one connection per node* and pipelines every call on it.

A request is ``[op, view_id, ...]``:

====================  =====================================================  ==============
``op``                arguments after ``view_id``                            reply
====================  =====================================================  ==============
``OP_GET``            ``key``                                                bytes or None
``OP_PUT``            ``key, value, ttl_s (0: none), weight (0: default)``   None
``OP_DELETE``         ``key``                                                bool
``OP_GET_MANY``       ``[key, ...]`` (at most ``GET_MANY_KEYS_MAX``)          list
====================  =====================================================  ==============

``view_id`` is the membership view the caller placed the keys under, checked as on gRPC
(``StaleView``, a ``FailedPrecondition``, travels back by class); 0 skips the check. A
malformed request is answered ``InvalidArgument`` and changes nothing; the connection stays.

Bounds, because a stranger can reach the port: a frame is at most ``frame_bytes_max``
(above it, and above 4 KiB before the handshake, the listener answers ``GOAWAY`` with a
``PeerError`` and drops that connection only), at most ``connections_max`` connections are
held (the next one gets ``GOAWAY`` ``Overloaded`` and is closed), requests in flight per
connection are bounded on both sides, and a multi-get whose values would not fit one reply
frame is refused before it is encoded. All of these are ``TcpLimits`` of the transport.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from blocks.core.errors import Cancelled, InvalidArgument, Unavailable
from blocks.core.tcp_limits import TcpLimits
from blocks.core.tcp_transport import TcpTransport

if TYPE_CHECKING:
    from blocks.cache.service import CacheService

__all__ = [
    "CLIENT_NAME",
    "DATA_CONNECTIONS_MAX",
    "DATA_FRAME_BYTES_MAX",
    "FRAME_SLACK_BYTES",
    "GET_MANY_KEYS_MAX",
    "OP_DELETE",
    "OP_GET",
    "OP_GET_MANY",
    "OP_PUT",
    "DataHandler",
    "DataListener",
    "DataNode",
    "data_limits",
    "parse_address",
]

OP_GET = 1
OP_PUT = 2
OP_DELETE = 3
OP_GET_MANY = 4

DATA_FRAME_BYTES_MAX = 4 * 1024 * 1024
"""Default bound on one data-path frame: a put of the largest value, or a multi-get reply."""
DATA_CONNECTIONS_MAX = 1024
GET_MANY_KEYS_MAX = 1000
FRAME_SLACK_BYTES = 64 * 1024  # room for keys and msgpack headers around the values
CLIENT_NAME = "cache-client"  # what a client calls itself in its HELLO


def data_limits(
    *, frame_bytes_max: int = DATA_FRAME_BYTES_MAX, connections_max: int = DATA_CONNECTIONS_MAX
) -> TcpLimits:
    """The ``TcpLimits`` of a data-path listener (and, for the frame size, of its clients)."""
    return TcpLimits(
        frame_bytes_max=frame_bytes_max,
        buffered_bytes_max=16 * frame_bytes_max,
        connections_max=connections_max,
        handshaking_max=min(256, connections_max),
    )


def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6]:port"``) as ``(host, port)``; ``InvalidArgument`` if not."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgument(f"expected HOST:PORT, got {address!r}")
    return host, int(port)


def _view_id(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise InvalidArgument("view_id must be an int >= 0")
    return value


class DataHandler:
    """The listener's ``Handler``: decodes a request and runs it on the ``CacheService``.

    ``calls`` counts the requests answered (tests read it to see which path a client took).
    """

    def __init__(self, service: CacheService, *, frame_bytes_max: int) -> None:
        self._service = service
        self._reply_bytes_max = frame_bytes_max - FRAME_SLACK_BYTES
        self.calls = 0

    async def __call__(self, source: str, message: Any) -> Any:
        if type(message) is not list or len(message) < 3:
            raise InvalidArgument("a data request is [op, view_id, ...]")
        self.calls += 1
        op, view_id = message[0], _view_id(message[1])
        service = self._service
        if op == OP_GET and len(message) == 3:
            return service.get_nowait(message[2], view_id)
        if op == OP_PUT and len(message) == 6:
            _, _, key, value, ttl_s, weight = message
            if type(ttl_s) not in (int, float) or not math.isfinite(ttl_s):
                raise InvalidArgument("ttl_s must be a finite number")
            if type(weight) is not int:
                raise InvalidArgument("weight must be an int")
            service.put_nowait(key, value, float(ttl_s), weight, view_id)
            return None
        if op == OP_DELETE and len(message) == 3:
            return service.delete_nowait(message[2], view_id)
        if op == OP_GET_MANY and len(message) == 3:
            return self._get_many(message[2], view_id)
        raise InvalidArgument(f"unknown data request: op {op!r} with {len(message) - 2} arguments")

    def _get_many(self, keys: Any, view_id: int) -> list[bytes | None]:
        if type(keys) is not list or len(keys) > GET_MANY_KEYS_MAX:
            raise InvalidArgument(f"get_many takes a list of at most {GET_MANY_KEYS_MAX} keys")
        values = self._service.get_many_nowait(keys, view_id)
        if sum(len(value) for value in values if value is not None) > self._reply_bytes_max:
            raise InvalidArgument("the values do not fit one reply frame; ask for fewer keys")
        return values


class DataNode:
    """A client of one node's data path: one connection, every call pipelined on it.

    The same call signatures as ``CacheClient`` for ``get``, ``put`` and ``delete`` (values
    are bytes, ``view_id`` as there), plus ``get_many``. Failures are the library's errors:
    ``Unavailable`` when the node cannot be reached or the connection breaks (calls in flight
    on it fail; the next call dials again, with backoff), ``Timeout`` past ``timeout_s``,
    ``StaleView``'s class ``FailedPrecondition`` from a node in another view.
    """

    def __init__(
        self,
        name: str,
        address: str,
        *,
        token: str | None = None,
        timeout_s: float = 1.0,
        frame_bytes_max: int = DATA_FRAME_BYTES_MAX,
    ) -> None:
        self.name = name
        self.address = address
        self._timeout_s = timeout_s
        self._closed = False
        self._transport = TcpTransport(
            CLIENT_NAME,
            listen=None,
            peers={name: parse_address(address)},
            token=token,
            limits=data_limits(frame_bytes_max=frame_bytes_max),
        )

    async def _call(self, message: list[Any]) -> Any:
        if self._closed:
            raise Unavailable(f"the client of node {self.name!r} is closed")
        try:
            return await self._transport.request(self.name, message, self._timeout_s)
        except Cancelled:  # closed under a call in flight (the node left the view)
            raise Unavailable(f"the client of node {self.name!r} closed during the call") from None

    async def get(self, key: str, *, view_id: int = 0) -> bytes | None:
        value: bytes | None = await self._call([OP_GET, view_id, key])
        return value

    async def put(
        self,
        key: str,
        value: bytes,
        ttl: float | None = None,
        weight: int = 1,
        *,
        view_id: int = 0,
    ) -> None:
        await self._call([OP_PUT, view_id, key, value, ttl or 0.0, weight])

    async def delete(self, key: str, *, view_id: int = 0) -> bool:
        return bool(await self._call([OP_DELETE, view_id, key]))

    async def get_many(self, keys: list[str], *, view_id: int = 0) -> list[bytes | None]:
        values: list[bytes | None] = await self._call([OP_GET_MANY, view_id, list(keys)])
        return values

    def stats(self) -> dict[str, int]:
        """The client transport's counters (``dials``, ``dial_failures``, ...)."""
        return self._transport.stats()

    async def close(self) -> None:
        self._closed = True
        await self._transport.close()


class DataListener:
    """A node's data-path listener: a ``TcpTransport`` named after the node, serving a
    ``DataHandler``; ``start`` and ``stop`` are the server component's hooks.

    ``advertise_host`` is the host peers and clients dial (default: the listening host);
    ``advertised`` joins it to the bound port once started. ``on_bound`` is called with
    that address when the listener is up (a cluster node gossips it).
    """

    def __init__(
        self,
        service: CacheService,
        name: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        limits: TcpLimits | None = None,
        advertise_host: str | None = None,
        on_bound: Callable[[str], None] | None = None,
    ) -> None:
        self.limits = limits if limits is not None else data_limits()
        self.handler = DataHandler(service, frame_bytes_max=self.limits.frame_bytes_max)
        self.transport = TcpTransport(name, listen=(host, port), token=token, limits=self.limits)
        self.transport.serve(self.handler)
        self._advertise_host = advertise_host or host
        self._on_bound = on_bound

    @property
    def advertised(self) -> str | None:
        """``host:port`` to dial, once started."""
        bound = self.transport.address
        if bound is None:
            return None
        host = self._advertise_host
        return f"[{host}]:{bound[1]}" if ":" in host else f"{host}:{bound[1]}"

    async def start(self) -> None:
        await self.transport.start()
        if self._on_bound is not None and self.advertised is not None:
            self._on_bound(self.advertised)

    async def stop(self) -> None:
        await self.transport.close()
