"""A kv node process: the data path on a ``TcpTransport`` and the gRPC ``Kv`` service.

Theory of operation. ``build_node`` assembles one node: a ``BitcaskObjectStore`` in the data
directory, a ``TcpTransport`` listening on ``listen`` (peers and Python clients share it: the
fast path), a ``KVNode`` driving the cores over it, and a ``blocks.core.server.Server``
whose gRPC ``Kv`` service (``kv.proto``, the language-neutral API) calls the same node. The
server's components start the transport and node before gRPC serves and stop them after it
drains, so ``blocks kv serve`` shuts down cleanly on SIGTERM; ``kill -9`` loses nothing
acknowledged because every write is in the store before its ack leaves.

TLS (``TlsFiles``): the node's certificate and key serve both listeners, the data path
(``blocks.core.net.server_tls_context``) and gRPC (``blocks.core.server.TlsConfig``), and
the CA is what the node's own dials to its peers trust. A TLS node refuses plaintext peers and
clients; a cluster is either all TLS or none.

gRPC calls validate like the data path (``InvalidArgument`` for bad keys, values, quorums,
timeouts or contexts) and map errors through the server's interceptor.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blocks.core.errors import InvalidArgument
from blocks.core.net import TcpTransport, server_tls_context
from blocks.core.rpc import PemSource
from blocks.core.server import Server, TlsConfig
from blocks.kv import kv_pb2, kv_pb2_grpc
from blocks.kv.client import Versioned
from blocks.kv.cluster.client_wire import check_quorum, check_timeout_s, parse_address
from blocks.kv.cluster.driver import KVNode, NodeConfig
from blocks.kv.cluster.persist import BitcaskObjectStore
from blocks.kv.cluster.versions import VersionVector, decode_context
from blocks.kv.engine.bitcask import SyncPolicy
from blocks.kv.limits import check_key, check_value

__all__ = ["KvService", "NodeProcess", "TlsFiles", "build_node"]


class KvService(kv_pb2_grpc.KvServicer):
    """The gRPC face of one ``KVNode``."""

    def __init__(self, node: KVNode) -> None:
        self.node = node

    def _quorum(self, value: int, name: str) -> int | None:
        return check_quorum(value or None, self.node.config.quorum.replicas, name)

    @staticmethod
    def _context(request: Any) -> VersionVector | None:
        return decode_context(request.context) if request.HasField("context") else None

    async def Put(self, request: Any, context: Any) -> Any:  # gRPC names are CamelCase
        result = await self.node.put(
            check_key(request.key),
            check_value(request.value, self.node.config.value_bytes_max),
            self._context(request),
            write_quorum=self._quorum(request.w, "w"),
            timeout_s=check_timeout_s(request.timeout_s or None),
        )
        written = Versioned.of(result.obj)
        return kv_pb2.PutReply(context=written.context, siblings=list(written.siblings))

    async def Get(self, request: Any, context: Any) -> Any:
        obj = await self.node.get(
            check_key(request.key),
            read_quorum=self._quorum(request.r, "r"),
            timeout_s=check_timeout_s(request.timeout_s or None),
        )
        read = Versioned.of(obj)
        return kv_pb2.GetReply(
            found=read.value is not None,
            value=read.value or b"",
            siblings=list(read.siblings),
            context=read.context,
        )

    async def Delete(self, request: Any, context: Any) -> Any:
        await self.node.put(
            check_key(request.key),
            None,
            self._context(request),
            write_quorum=self._quorum(request.w, "w"),
            timeout_s=check_timeout_s(request.timeout_s or None),
        )
        return kv_pb2.DeleteReply()

    async def Status(self, request: Any, context: Any) -> Any:
        members = self.node.members()
        status = self.node.status()
        return kv_pb2.StatusReply(
            node=self.node.node_id,
            members=[kv_pb2.Member(node=n, address=a, healthy=h) for n, a, h in members["nodes"]],
            keys=status["keys"],
            hints_pending=status["hints_pending"],
            replicas=members["replicas"],
        )


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A node's TLS material, each PEM bytes or a path: its certificate chain and key (for
    both listeners) and the CA its peers' certificates must be signed by. ``server_name`` is
    the name peers' certificates are checked for, when not the host they are dialed at."""

    cert: PemSource
    key: PemSource
    ca: PemSource
    server_name: str | None = None

    def __post_init__(self) -> None:
        if self.server_name is not None and not self.server_name:
            raise InvalidArgument("server_name must be non-empty when given")


@dataclass(slots=True)
class NodeProcess:
    server: Server
    node: KVNode
    transport: TcpTransport


def build_node(
    node_id: str,
    *,
    listen: str,
    data_dir: str | Path,
    peers: dict[str, str] | None = None,
    grpc_listen: str | None = None,
    token: str | None = None,
    config: NodeConfig | None = None,
    sync: SyncPolicy = "batch",
    tls: TlsFiles | None = None,
    advertise: str | None = None,
) -> NodeProcess:
    """A node (not started): ``await process.server.start()`` starts everything.

    ``listen`` needs a real port (not 0). ``advertise`` (default: ``listen``) is the data-path
    address the node gossips, so the one peers not given it in ``peers`` and clients dial: a
    public name for a wildcard ``listen``, or a proxy in front of the node. A peer given in
    ``peers`` is always dialed at that address. With ``tls`` both listeners and every dial to
    a peer use TLS (``InvalidArgument`` if the material cannot be loaded).
    """
    host, port = parse_address(listen)
    if advertise is not None:
        parse_address(advertise)  # InvalidArgument unless HOST:PORT with a real port
    address = f"{host}:{port}" if advertise is None else advertise
    peers = dict(peers or {})
    transport = TcpTransport(
        node_id,
        (host, port),
        {n: parse_address(a) for n, a in peers.items()},
        token,
        tls=None if tls is None else server_tls_context(tls.cert, tls.key),
        tls_ca=None if tls is None else tls.ca,
        tls_server_name=None if tls is None else tls.server_name,
    )
    store = BitcaskObjectStore(Path(data_dir), sync=sync)
    node = KVNode(
        node_id,
        transport,
        config=config,
        rng=random.Random(),
        seeds=peers,
        address=address,
        store=store,
    )
    grpc_host, grpc_port = parse_address(grpc_listen) if grpc_listen else (host, 0)
    server = Server(
        host=grpc_host,
        port=grpc_port,
        token=token,
        tls=None if tls is None else TlsConfig(tls.cert, tls.key),
        name=f"kv-{node_id}",
    )

    async def start() -> None:
        await transport.start()
        await node.start()

    async def stop() -> None:
        await node.stop()
        await transport.close()

    server.add_component(start, stop, name="kv-node")
    server.add_service(
        kv_pb2_grpc.add_KvServicer_to_server, KvService(node), health_name="blocks.kv.Kv"
    )
    return NodeProcess(server, node, transport)
