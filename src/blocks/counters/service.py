"""The counters gRPC service: PN-Counters (a ``GossipReplica``), HyperLogLogs and top-k.

One node holds one ``GossipReplica``; with peers (``GossipNode`` over a ``TcpTransport``
between processes) the counters converge across nodes as described in ``gossip``; alone it is
an exact counter server. Distinct counts and heavy hitters are per node (sketches merge, but this service does
not replicate them). Every table is bounded: ``SKETCHES_MAX`` sketches of each kind and
``ITEMS_PER_CALL_MAX`` items per call, beyond which calls fail with ``Overloaded`` or
``InvalidArgument``.
"""

from __future__ import annotations

import random
from typing import Any

from blocks.core.errors import InvalidArgument, Overloaded
from blocks.core.server import Server
from blocks.core.tcp_transport import TcpTransport
from blocks.counters import counters_pb2, counters_pb2_grpc
from blocks.counters.countmin import TopK
from blocks.counters.gossip import GossipNode, GossipReplica
from blocks.counters.hyperloglog import HyperLogLog
from blocks.counters.local import check_name

__all__ = ["ITEMS_PER_CALL_MAX", "SKETCHES_MAX", "CountersService", "build_server"]

SKETCHES_MAX = 1000
ITEMS_PER_CALL_MAX = 10_000
TOP_K = 100


class CountersService(counters_pb2_grpc.CountersServicer):
    def __init__(self, replica: GossipReplica, *, hll_precision: int = 14) -> None:
        self.replica = replica
        self._hll_precision = hll_precision
        self._distinct: dict[str, HyperLogLog] = {}
        self._frequent: dict[str, TopK] = {}
        self.gossip_transport: TcpTransport | None = None

    @staticmethod
    def _items(request: Any) -> list[bytes]:
        check_name(request.name)
        if len(request.items) > ITEMS_PER_CALL_MAX:
            raise InvalidArgument(f"at most {ITEMS_PER_CALL_MAX} items per call")
        return list(request.items)

    def _sketch(self, table: dict[str, Any], name: str, make: Any) -> Any:
        sketch = table.get(name)
        if sketch is None:
            if len(table) >= SKETCHES_MAX:
                raise Overloaded(f"at most {SKETCHES_MAX} sketches of this kind")
            sketch = table[name] = make()
        return sketch

    async def Increment(self, request: Any, context: Any) -> Any:  # gRPC names are CamelCase
        value = self.replica.increment(request.name, request.amount)
        return counters_pb2.ValueReply(name=request.name, value=value)

    async def Value(self, request: Any, context: Any) -> Any:
        return counters_pb2.ValueReply(name=request.name, value=self.replica.value(request.name))

    async def AddDistinct(self, request: Any, context: Any) -> Any:
        items = self._items(request)
        sketch = self._sketch(
            self._distinct, request.name, lambda: HyperLogLog(self._hll_precision)
        )
        sketch.add_many(items)
        return counters_pb2.CountReply(count=sketch.count())

    async def CountDistinct(self, request: Any, context: Any) -> Any:
        check_name(request.name)
        sketch = self._distinct.get(request.name)
        return counters_pb2.CountReply(count=sketch.count() if sketch else 0)

    async def AddFrequent(self, request: Any, context: Any) -> Any:
        items = self._items(request)
        tracker = self._sketch(self._frequent, request.name, lambda: TopK(TOP_K))
        for item in items:
            tracker.add(item)
        return counters_pb2.CountReply(count=tracker.sketch.total)

    async def TopK(self, request: Any, context: Any) -> Any:
        check_name(request.name)
        tracker = self._frequent.get(request.name)
        entries = tracker.top(request.n or TOP_K) if tracker else []
        return counters_pb2.TopKReply(
            items=[item if isinstance(item, bytes) else item.encode() for item, _ in entries],
            counts=[count for _, count in entries],
        )


def build_server(
    name: str = "counters-0",
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    gossip_listen: tuple[str, int] | None = None,
    peers: dict[str, tuple[str, int]] | None = None,
    gossip_interval_s: float = 0.2,
    seed: int | None = None,
) -> tuple[Server, CountersService]:
    """A ``Server`` (not yet started) with a counters service for replica ``name``.

    With ``gossip_listen`` the node also runs a ``GossipNode`` over a ``TcpTransport``
    listening there and gossiping with ``peers`` (replica name to gossip address).
    """
    replica = GossipReplica(name, list(peers or {}), rng=random.Random(seed))
    service = CountersService(replica)
    server = Server(host=host, port=port, token=token, name="counters")
    if gossip_listen is not None:
        transport = TcpTransport(name, gossip_listen, dict(peers or {}), token)
        node = GossipNode(replica, transport, interval_s=gossip_interval_s)

        async def start_gossip() -> None:
            await transport.start()
            node.start()

        async def stop_gossip() -> None:
            await node.stop()
            await transport.close()

        server.add_component(start_gossip, stop_gossip, name="gossip")
        service.gossip_transport = transport
    server.add_service(
        counters_pb2_grpc.add_CountersServicer_to_server,
        service,
        health_name="blocks.counters.Counters",
    )
    return server, service
