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

A peer that failed a call that way is *held down* for ``down_hold_s``: calls to it fail at
once with ``Unavailable``, as they would against a refused HTTP connection. Without it
every call to a dead node waited out ``TcpTransport``'s reconnect backoff (up to 2 s by
default), and a GET, which reads past a missing shard from the other nodes, took 3-8 s per
object with one node of three killed (measured, ``test_peer_tcp_process.py``). The hold
equals the longest backoff of the transport ``tcp_peer_transport`` makes, so when it ends
the transport dials at once: a dead node costs one refused dial per hold.

Bounds: every message is one frame, so a shard (a chunk's ``1/k`` plus its header) and a
snapshot must fit the transport's frame limit (16 MiB by default: chunks up to 64 MiB with
``rs:4+2``); a larger one fails at the sender with ``InvalidArgument``, which a shard write
reports as ``Unavailable`` and a sync round counts as a peer that did not answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any
from urllib.parse import urlsplit

from blocks.blob.cluster.peer_protocol import ShardHost, serve_message
from blocks.core.errors import Cancelled, FailedPrecondition, InvalidArgument, Timeout, Unavailable
from blocks.core.net import TcpTransport
from blocks.core.transport import Transport

__all__ = ["PEER_TIMEOUT_S", "TransportPeerChannel", "serve_peers", "tcp_peer_transport"]

PEER_TIMEOUT_S = 10.0
"""Deadline of one peer request (as ``peers.SHARD_TIMEOUT_S`` over HTTP)."""
DOWN_HOLD_S = 0.5
"""How long a peer that failed a call is held down (see the module docstring): also how
long a peer that came back may still be refused (2 s failed the first write through a node
whose peers had been down at its start, in one run of five)."""
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
        down_hold_s: float = DOWN_HOLD_S,
    ) -> None:
        self.name = dest
        self._transport = transport
        self._loop = loop
        self._timeout_s = timeout_s
        self._down_hold_s = down_hold_s
        self._down_until = 0.0
        """``time.monotonic()`` before which calls fail at once (plain float: a racing
        reader sees the old or the new value, either of which is a fine answer)."""
        self.calls_refused_down = 0

    def call(self, message: list[Any]) -> Any:
        assert not self._in_loop(), "a blocking peer call on the transport's own loop"
        if time.monotonic() < self._down_until:
            self.calls_refused_down += 1
            raise Unavailable(f"peer {self.name} is held down after a failed call")
        request = self._transport.request(self.name, message, self._timeout_s)
        future = asyncio.run_coroutine_threadsafe(request, self._loop)
        try:
            return future.result(self._timeout_s + _HANDOFF_S)
        except Unavailable:
            self._down_until = time.monotonic() + self._down_hold_s
            raise
        except (Timeout, Cancelled, FailedPrecondition) as error:
            self._down_until = time.monotonic() + self._down_hold_s
            raise Unavailable(f"peer {self.name} did not answer: {error}") from error
        except TimeoutError as error:  # the loop itself did not get to it in time
            future.cancel()
            self._down_until = time.monotonic() + self._down_hold_s
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


def tcp_peer_transport(
    listen: str, peers: Sequence[str], token: str
) -> tuple[TcpTransport, list[str]]:
    """A ``TcpTransport`` for a ``blocks blob serve`` node's peer traffic: it listens on
    ``listen`` (``host:port``) and is named by it, and knows each of ``peers``
    (``tcp://host:port``, their own listen addresses) by its ``host:port``; the cluster
    token is the bearer token it presents and requires. ``InvalidArgument`` for an address
    of another shape. Returns the transport (not started: ``await start()`` it on the
    serving loop) and the peers' names."""
    host, port = _address(listen)
    known: dict[str, tuple[str, int]] = {}
    for peer in peers:
        parts = urlsplit(peer)
        if parts.scheme != "tcp" or parts.path not in ("", "/"):
            raise InvalidArgument(f"with --peer-listen, a peer is tcp://host:port, got {peer!r}")
        known[parts.netloc] = _address(parts.netloc)
    transport = TcpTransport(
        f"{host}:{port}", (host, port), known, token, backoff_max_s=DOWN_HOLD_S
    )
    return transport, list(known)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgument(f"expected host:port, got {text!r}")
    return host, int(port)
