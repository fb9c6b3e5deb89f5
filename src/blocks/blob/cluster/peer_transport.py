"""The peer messages over a ``blocks.core.transport.Transport``: in-process ``MemoryNetwork``
(tests and seeded-fault simulations) or ``TcpTransport`` (framed msgpack between processes).

Theory of operation. The blob store is blocking: a PUT's thread writes the shards on every
node and waits for a majority to journal its records. ``TransportPeerChannel.call`` hands
the request to the event loop that owns the transport (``run_coroutine_threadsafe``) and
blocks the calling thread until the reply, so it must never be called on that loop's thread
(it would wait for itself). ``serve_peers`` answers inbound messages from a ``ShardHost`` on
a worker pool, because answering writes and flushes files.

Errors: a request the transport cannot deliver or that gets no reply within ``timeout_s``
(``Unavailable``, ``Timeout``, ``Cancelled`` once the transport closes) is ``Unavailable``
to the caller, as ``PeerChannel`` promises; the peer's own errors arrive with their class.

Bounds: every message is one frame, so a shard (a chunk's ``1/k`` plus its header) and a
snapshot must fit the transport's frame limit (16 MiB by default: chunks up to 64 MiB with
``rs:4+2``); a larger one fails at the sender with ``InvalidArgument``, which a shard write
reports as ``Unavailable`` and a sync round counts as a peer that did not answer.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Any

from blocks.blob.cluster.peer_protocol import ShardHost, serve_message
from blocks.core.errors import Cancelled, FailedPrecondition, Timeout, Unavailable
from blocks.core.transport import Transport

__all__ = ["PEER_TIMEOUT_S", "TransportPeerChannel", "serve_peers"]

PEER_TIMEOUT_S = 10.0
"""Deadline of one peer request (as ``peers.SHARD_TIMEOUT_S`` over HTTP)."""
_HANDOFF_S = 5.0
"""Extra time the calling thread waits past the request's own deadline for the loop."""


class TransportPeerChannel:
    """Peer messages to the node named ``dest`` on ``transport``, whose loop is ``loop``."""

    def __init__(
        self,
        transport: Transport,
        dest: str,
        loop: asyncio.AbstractEventLoop,
        *,
        timeout_s: float = PEER_TIMEOUT_S,
    ) -> None:
        self.name = dest
        self._transport = transport
        self._loop = loop
        self._timeout_s = timeout_s

    def call(self, message: list[Any]) -> Any:
        assert not self._in_loop(), "a blocking peer call on the transport's own loop"
        request = self._transport.request(self.name, message, self._timeout_s)
        future = asyncio.run_coroutine_threadsafe(request, self._loop)
        try:
            return future.result(self._timeout_s + _HANDOFF_S)
        except (Timeout, Cancelled, FailedPrecondition) as error:
            raise Unavailable(f"peer {self.name} did not answer: {error}") from error
        except TimeoutError as error:  # the loop itself did not get to it in time
            future.cancel()
            raise Unavailable(f"peer {self.name} did not answer in time") from error

    def _in_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False


def serve_peers(transport: Transport, host: ShardHost, executor: Executor) -> None:
    """Answer the peer messages ``transport`` receives from ``host``, each on ``executor``
    (call it on the transport's loop; ``executor`` bounds how many run at once)."""

    async def handle(source: str, message: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, serve_message, host, message)

    transport.serve(handle)
