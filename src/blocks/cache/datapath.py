"""The cache's data path: get, put, delete and multi-get as msgpack frames over TCP.

Theory of operation
-------------------
gRPC stays the node's public, language-neutral API (and carries membership), but a data call
through it costs far more than the cache lookup it wraps: a protobuf message, HTTP/2 frames
and a task per call on each side. The data path moves only the four data calls onto the
library's own framed TCP (``blocks.core.net.TcpTransport``, reused whole: this
module adds only the requests and their handler): a 4-byte length and a msgpack array per
frame, a ``HELLO``/``WELCOME`` handshake with the bearer token (the client also learns it
reached the node it meant: the listener names itself), and request ids, so a client keeps
*one connection per node* and pipelines every call on it.

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

Batches. ``[OP_BATCH, 0, [call, ...]]`` carries up to ``BATCH_CALLS_MAX`` of the calls above;
the node runs them in order and answers one ``[BATCH_OK, reply]`` or ``[BATCH_ERROR,
error]`` each. The client (``blocks.cache.dataclient``) sends everything its callers asked of
one node in one turn of the event loop as one batch: with 16 calls in flight the cost of a
frame, a system call on each side and a task on the node is paid once per batch, not per
call, and no call waits longer than that turn. A batch's reply must fit one frame: a read
whose value would overflow it is answered ``[BATCH_RESEND]`` (never the first call of a
batch, so resending makes progress).

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

from blocks.core.errors import BlocksError, InvalidArgument
from blocks.core.net import TcpLimits, TcpTransport
from blocks.core.transport import error_to_wire

if TYPE_CHECKING:
    from blocks.cache.service import CacheService

__all__ = [
    "BATCH_CALLS_MAX",
    "BATCH_ERROR",
    "BATCH_OK",
    "BATCH_RESEND",
    "CLIENT_NAME",
    "DATA_CONNECTIONS_MAX",
    "DATA_FRAME_BYTES_MAX",
    "FRAME_SLACK_BYTES",
    "GET_MANY_KEYS_MAX",
    "OP_BATCH",
    "OP_DELETE",
    "OP_GET",
    "OP_GET_MANY",
    "OP_PUT",
    "DataHandler",
    "DataListener",
    "data_limits",
    "parse_address",
]

OP_GET = 1
OP_PUT = 2
OP_DELETE = 3
OP_GET_MANY = 4
OP_BATCH = 5
BATCH_OK = 0
BATCH_ERROR = 1
BATCH_RESEND = 2
BATCH_CALLS_MAX = 256

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

    ``calls`` counts the data calls answered, each call of a batch included (tests read it
    to see which path a client took).
    """

    def __init__(self, service: CacheService, *, frame_bytes_max: int) -> None:
        self._service = service
        self._reply_bytes_max = frame_bytes_max - FRAME_SLACK_BYTES
        self.calls = 0

    async def __call__(self, source: str, message: Any) -> Any:
        if type(message) is list and len(message) == 3 and message[0] == OP_BATCH:
            return self.batch_nowait(message[2])
        return self.answer_nowait(message)

    def batch_nowait(self, calls: Any) -> list[list[Any]]:
        """Run ``calls`` in order; one ``[BATCH_OK, reply]``, ``[BATCH_ERROR, error]`` or
        ``[BATCH_RESEND]`` per call. A call whose reply would overflow the reply frame is
        answered ``BATCH_RESEND`` (only reads can: their values are the large replies), the
        first call never is, so a client that resends what it is told makes progress."""
        if type(calls) is not list or not 0 < len(calls) <= BATCH_CALLS_MAX:
            raise InvalidArgument(f"a batch holds 1..{BATCH_CALLS_MAX} calls")
        results: list[list[Any]] = []
        reply_bytes = 0
        for call in calls:
            try:
                reply = self.answer_nowait(call)
            except BlocksError as error:
                results.append([BATCH_ERROR, error_to_wire(error)])
                continue
            size = _reply_bytes(reply)
            if results and reply_bytes + size > self._reply_bytes_max:
                results.append([BATCH_RESEND])
                continue
            reply_bytes += size
            results.append([BATCH_OK, reply])
        return results

    def answer_nowait(self, message: Any) -> Any:
        """The reply to one data call (see the module docs); ``InvalidArgument`` for a
        malformed one, ``StaleView`` under another view."""
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
        if _reply_bytes(values) > self._reply_bytes_max:
            raise InvalidArgument("the values do not fit one reply frame; ask for fewer keys")
        return values


def _reply_bytes(reply: Any) -> int:
    if isinstance(reply, bytes):
        return len(reply)
    if isinstance(reply, list):
        return sum(len(value) for value in reply if isinstance(value, bytes))
    return 0


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
