"""A block's data path beside its gRPC service: the set-up that servers and clients share.

Theory of operation
-------------------
gRPC stays a block's public, language-neutral API, but a unary gRPC call costs the Python
client and server several times what one pipelined frame of the core transport costs
(``docs/core.md``, "why the data path is framed msgpack"). So a server whose hot calls are
small (pubsub's produce and fetch, the queue's sends and acks) also listens on a
``TcpTransport``: same host, same bearer token, port ``data_port`` (0: any free port; None:
no data path). Its ``DataPath`` RPC tells clients the transport's port and node name, port 0
when there is none.

A client asks once (``ask_data_path``), registers the name as a peer of its own transport
and sends its hot calls there; against a server without a data path (port 0, or a server
that answers the RPC with UNIMPLEMENTED) it stays on gRPC. A restarted server listens under
a new node name, so a request the transport refuses at the greeting (``PeerError``) is
``Unavailable`` to the caller (``data_request``): the client forgets the name and asks again.

What stays in each block: the handler of the data path's messages (its wire format) and the
client's policy of which calls go there.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from blocks.core.clock import Clock
from blocks.core.errors import BlocksError, PeerError, Timeout, Unavailable
from blocks.core.net import TcpTransport
from blocks.core.server import Hook, Server

__all__ = ["ask_data_path", "build_data_path_server", "data_path_address", "data_request"]

Handler = Callable[[str, Any], Awaitable[Any]]


def build_data_path_server(
    block: str,
    *,
    listen: tuple[str, int],
    token: str | None,
    clock: Clock | None,
    data_port: int | None,
    handler: Handler,
    add_servicer: Callable[[Any, Any], None],
    servicer: Callable[[TcpTransport | None], Any],
    health_name: str,
    start: Hook | None,
    stop: Hook,
    cluster: TcpTransport | None = None,
) -> Server:
    """A ``Server`` (not started) named ``block`` on ``listen`` (host, port), serving
    ``servicer(data_path)`` over gRPC and ``handler`` on a data path at ``(host,
    data_port)`` (None: no data path, and the servicer gets None).

    ``start``/``stop`` open and close the block's storage (component ``<block>-storage``);
    the data path (``<block>-data``) starts after the storage and stops before it, since
    components stop in reverse order. ``cluster``, a replicated node's transport to its
    peers, starts before the storage opens and closes first of all (``<block>-transport``):
    the node stops replicating before its data path and storage close. The caller adds its
    own components after this."""
    host, port = listen
    if cluster is not None:
        start = _after(cluster.start, start)
    server = Server(host=host, port=port, token=token, name=block, clock=clock)
    data_path = None
    if data_port is not None:
        data_path = TcpTransport(f"{block}-{uuid.uuid4().hex[:12]}", (host, data_port), token=token)
        data_path.serve(handler)
    server.add_service(add_servicer, servicer(data_path), health_name=health_name)
    server.add_component(start=start, stop=stop, name=f"{block}-storage")
    if data_path is not None:  # stopped before the storage: components stop in reverse
        server.add_component(start=data_path.start, stop=data_path.close, name=f"{block}-data")
    if cluster is not None:  # added last: stopped first
        server.add_component(stop=cluster.close, name=f"{block}-transport")
    return server


def _after(first: Hook, then: Hook | None) -> Hook:
    """A hook that runs ``first``, then ``then`` (if any), each awaited when it is async."""

    async def both() -> None:
        for hook in (first, then):
            result = None if hook is None else hook()
            if inspect.isawaitable(result):
                await result

    return both


def data_path_address(data_path: TcpTransport | None) -> tuple[int, str]:
    """What the ``DataPath`` RPC answers: ``(port, node name)``, ``(0, "")`` when there is
    no data path or it is not listening yet."""
    if data_path is None or data_path.address is None:
        return 0, ""
    return data_path.address[1], data_path.name


async def ask_data_path(
    ask: Callable[[], Awaitable[Any]], transport: TcpTransport, address: str
) -> str:
    """Ask the server at ``address`` (``host:port``, ``[v6]:port``) for its data path.

    ``ask()`` makes the ``DataPath`` RPC with errors mapped to ``BlocksError`` and returns
    its reply (``port``, ``name``). On an answer with a data path, the name is registered as
    a peer of ``transport`` at the server's host and returned; "" means none (port 0, or any
    ``BlocksError`` but ``Unavailable`` and ``Timeout``, such as UNIMPLEMENTED from a server
    that predates data paths). ``Unavailable`` and ``Timeout`` pass through: the server may
    have one but did not answer."""
    try:
        reply = await ask()
    except (Unavailable, Timeout):
        raise
    except BlocksError:
        return ""
    if not reply.port or not reply.name:
        return ""
    host = address.rpartition(":")[0].strip("[]")
    name = str(reply.name)
    transport.add_peer(name, (host, int(reply.port)))
    return name


async def data_request(
    transport: TcpTransport, name: str, message: Any, timeout_s: float, *, what: str = "server"
) -> Any:
    """``transport.request(name, message, timeout_s)`` with a refused greeting
    (``PeerError``: a restarted ``what`` listens under a new node name) raised as
    ``Unavailable``, which tells the caller to forget ``name``, ask again and retry; other
    errors pass through unchanged."""
    try:
        return await transport.request(name, message, timeout_s)
    except PeerError as error:
        raise Unavailable(f"the {what}'s data path changed ({error}); retry") from error
