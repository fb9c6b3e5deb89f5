"""The shard data path: a coordinator's ``SearchVectors`` call as one frame over the core TCP.

Theory of operation. A coordinator sends every shard the whole batch (540 KB for 1,000 x 128
queries) once per search. Over gRPC a shard spent about 3 ms of CPU per such call before its
index saw the queries (the HTTP/2 stack, the protobuf message, the asyncio servicer); the
same bytes as one msgpack frame on ``blocks.core.net.TcpTransport`` (the framed transport the
kv, cache and pubsub blocks use between processes) cost it under 1 ms. So a shard node
(``serve`` without ``--remote-shards`` or TLS) also listens on a *data port*, announced in
``InfoReply.data_port``, and a coordinator's ``ReplicaLink`` sends its searches there; every
other call (writes, training, ``Info``, the health stream) stays on gRPC.

* **The same handler**: a frame is turned back into the ``SearchVectorsRequest`` it was made
  from and given to the node's ``SearchService.SearchVectors``, so validation, the read lock
  and the answer are the gRPC call's; the reply's ``ids_le`` and ``distances_le`` bytes come
  back as they are.
* **Errors** travel as the library's error classes (``blocks.core.transport``): a shard's
  ``InvalidArgument`` is raised as such; a refused or broken connection is ``Unavailable`` and
  a call past its time ``Timeout``, both retryable, so fail-over, hedging and partial answers
  behave as over gRPC.
* **Auth**: the dialer presents the same bearer token in its ``HELLO``; a listener started
  with a token refuses any other (``Unauthenticated``). The data path is plaintext, so a node
  serving TLS opens none (``data_port`` 0) and its coordinator stays on gRPC.
* **Cancel**: a call is a ``concurrent.futures.Future`` (``cancel``, ``add_done_callback``),
  as a gRPC future; cancelling drops the caller's wait, and the shard's answer, if it comes,
  is discarded (over gRPC the shard's index call ran to its end too).

Frame: ``[OP_SEARCH, request bytes]`` (the serialised ``SearchVectorsRequest``); answer
``[reply bytes]`` (the serialised ``SearchVectorsReply``). Protobuf parses a bytes field as
one copy, so the batch is copied about three times on its way in, not walked per value.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any

from blocks.core.errors import InvalidArgument, Unavailable
from blocks.core.loop_thread import LoopThread
from blocks.core.net import TcpTransport
from blocks.core.rpc import MESSAGE_BYTES_MAX
from blocks.search import search_pb2

__all__ = ["DATA_FRAME_BYTES_MAX", "OP_SEARCH", "DataPathClient", "SearchDataPath"]

OP_SEARCH = 1
DATA_FRAME_BYTES_MAX = MESSAGE_BYTES_MAX + 4096  # a gRPC message's limit, plus the framing
SERVER_NAME = "search-data"
CLIENT_NAME = "search-coordinator"


class SearchDataPath:
    """A shard node's data-path listener: ``handle`` answers ``OP_SEARCH`` frames with
    ``search`` (an ``async (SearchVectorsRequest) -> SearchVectorsReply``, the service's
    ``SearchVectors`` without a gRPC context). ``start``/``close`` on the node's loop."""

    def __init__(self, search: Any, host: str, *, token: str | None = None) -> None:
        self._search = search
        self.transport = TcpTransport(
            SERVER_NAME, listen=(host, 0), token=token, frame_bytes_max=DATA_FRAME_BYTES_MAX
        )
        self.transport.serve(self.handle)

    @property
    def port(self) -> int:
        """The bound port once started, else 0."""
        address = self.transport.address
        return 0 if address is None else int(address[1])

    async def start(self) -> None:
        await self.transport.start()

    async def close(self) -> None:
        await self.transport.close()

    async def handle(self, sender: str, message: Any) -> Any:
        """One frame: ``[OP_SEARCH, request bytes]`` -> ``[reply bytes]``; ``InvalidArgument``
        for any other frame."""
        if (
            not isinstance(message, list)
            or len(message) != 2
            or message[0] != OP_SEARCH
            or not isinstance(message[1], bytes)
        ):
            raise InvalidArgument("a search data-path frame is [OP_SEARCH, request bytes]")
        try:
            request = search_pb2.SearchVectorsRequest.FromString(message[1])
        except Exception:  # protobuf's DecodeError: the peer sent garbage
            raise InvalidArgument("the frame does not hold a SearchVectorsRequest") from None
        reply = await self._search(request)
        return [reply.SerializeToString()]


class DataPathClient:
    """One loop thread for every data path a coordinator calls, and a client-only
    ``TcpTransport`` per replica (every listener is named ``SERVER_NAME``, which a dialer
    checks; one connection per replica, pipelined). Thread-safe; ``close`` once."""

    def __init__(self, *, token: str | None = None) -> None:
        self._token = token
        self._loop = LoopThread(name="search-data-path")
        self._transports: dict[str, TcpTransport] = {}  # by replica; touched on the loop
        self._lock = threading.Lock()
        self._closed = False

    def set_peer(self, name: str, host: str, port: int) -> None:
        """Where replica ``name``'s data path listens (again after it restarted)."""
        self._loop.loop.call_soon_threadsafe(self._set_peer, name, (host, port))

    def _set_peer(self, name: str, address: tuple[str, int]) -> None:
        transport = self._transports.get(name)
        if transport is None:
            transport = self._transports[name] = TcpTransport(
                CLIENT_NAME, listen=None, token=self._token, frame_bytes_max=DATA_FRAME_BYTES_MAX
            )
        transport.add_peer(SERVER_NAME, address)

    def start(self, name: str, request: Any, timeout_s: float) -> Future[Any]:
        """Send ``request`` (a ``SearchVectorsRequest``) to replica ``name``; the future
        gives its ``SearchVectorsReply`` or raises the call's ``BlocksError``."""
        payload = [OP_SEARCH, request.SerializeToString()]
        return asyncio.run_coroutine_threadsafe(
            self._call(name, payload, max(0.001, timeout_s)), self._loop.loop
        )

    async def _call(self, name: str, payload: list[Any], timeout_s: float) -> Any:
        transport = self._transports.get(name)
        if transport is None:
            raise Unavailable(f"no data port known for replica {name}")
        answer = await transport.request(SERVER_NAME, payload, timeout_s)
        if not isinstance(answer, list) or len(answer) != 1 or not isinstance(answer[0], bytes):
            raise InvalidArgument("a search data-path answer is [reply bytes]")
        return search_pb2.SearchVectorsReply.FromString(answer[0])

    async def _close_all(self) -> None:
        for transport in self._transports.values():
            await transport.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._loop.call(self._close_all(), 5.0)
        finally:
            self._loop.stop()
