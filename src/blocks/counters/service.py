"""The counters gRPC service: PN-Counters (a ``GossipReplica``), HyperLogLogs and top-k.

One node holds one ``CountersNode``: PN-Counters (``gossip``) and replicated sketches
(``sketchstate``: HyperLogLog by register max, heavy hitters as per-node Count-Min sketches
summed at query time with top-k recomputed). With peers (``GossipNode`` over a
``TcpTransport`` between processes) all of it converges across nodes; alone it is an exact
counter server. With a data directory (``durable``) every update is logged before it is
acknowledged and the state is snapshotted, so a restart (kill -9 included) keeps every
acknowledged update and the node comes back under its own name. Every table is bounded: ``SKETCHES_MAX`` sketches of each kind and
``ITEMS_PER_CALL_MAX`` items per call, beyond which calls fail with ``Overloaded`` or
``InvalidArgument``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

from blocks.core.errors import InvalidArgument
from blocks.core.log import FsyncPolicy
from blocks.core.net import TcpTransport
from blocks.core.server import Server
from blocks.counters import counters_pb2, counters_pb2_grpc
from blocks.counters.durable import CountersStore
from blocks.counters.gossip import GossipNode
from blocks.counters.local import check_name
from blocks.counters.node import ITEMS_PER_CALL_MAX, CountersNode
from blocks.counters.sketchstate import SKETCHES_MAX

__all__ = ["ITEMS_PER_CALL_MAX", "SKETCHES_MAX", "CountersService", "build_server"]

TOP_K = 100
SNAPSHOT_INTERVAL_S = 10.0


class CountersService(counters_pb2_grpc.CountersServicer):
    """Serves one ``CountersNode``; with a ``CountersStore`` every update is applied, logged
    and durable before it is acknowledged."""

    def __init__(self, node: CountersNode, store: CountersStore | None = None) -> None:
        self.node = node
        self.replica = node.counters
        self.store = store
        self.gossip_transport: TcpTransport | None = None
        self._snapshotter: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.store is not None:
            await asyncio.to_thread(self.store.open)
            self._snapshotter = asyncio.get_running_loop().create_task(self._snapshot_forever())

    async def stop(self) -> None:
        if self._snapshotter is not None:
            self._snapshotter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._snapshotter
        if self.store is not None:
            self.store.close()

    async def _snapshot_forever(self) -> None:
        assert self.store is not None
        while True:
            await asyncio.sleep(SNAPSHOT_INTERVAL_S)
            self.store.maybe_snapshot()

    async def _update(self, kind: str, name: str, argument: Any) -> int:
        record = [kind, name, argument]
        result = self.node.apply(record)
        if self.store is not None:
            await self.store.record(record)  # its write happens before this first await
            self.store.maybe_snapshot()
        return result

    @staticmethod
    def _items(request: Any) -> list[bytes]:
        check_name(request.name)
        if len(request.items) > ITEMS_PER_CALL_MAX:
            raise InvalidArgument(f"at most {ITEMS_PER_CALL_MAX} items per call")
        return list(request.items)

    async def Increment(self, request: Any, context: Any) -> Any:  # gRPC names are CamelCase
        value = await self._update("increment", request.name, request.amount)
        return counters_pb2.ValueReply(name=request.name, value=value)

    async def Value(self, request: Any, context: Any) -> Any:
        return counters_pb2.ValueReply(name=request.name, value=self.replica.value(request.name))

    async def AddDistinct(self, request: Any, context: Any) -> Any:
        count = await self._update("distinct", request.name, self._items(request))
        return counters_pb2.CountReply(count=count)

    async def CountDistinct(self, request: Any, context: Any) -> Any:
        check_name(request.name)
        return counters_pb2.CountReply(count=self.node.sketches.count_distinct(request.name))

    async def AddFrequent(self, request: Any, context: Any) -> Any:
        total = await self._update("frequent", request.name, self._items(request))
        return counters_pb2.CountReply(count=total)

    async def TopK(self, request: Any, context: Any) -> Any:
        check_name(request.name)
        entries = self.node.sketches.top(request.name, request.n or TOP_K)
        return counters_pb2.TopKReply(
            items=[item for item, _ in entries], counts=[count for _, count in entries]
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
    data_dir: str | None = None,
    fsync: FsyncPolicy = "batch",
) -> tuple[Server, CountersService]:
    """A ``Server`` (not yet started) with a counters service for replica ``name``.

    With ``gossip_listen`` the node also runs a ``GossipNode`` over a ``TcpTransport``
    listening there and gossiping with ``peers`` (replica name to gossip address). With
    ``data_dir`` its state survives restarts (``CountersStore``: log + snapshots).
    """
    state = CountersNode(name, list(peers or {}), rng=random.Random(seed))
    store = CountersStore(data_dir, state, fsync=fsync) if data_dir is not None else None
    service = CountersService(state, store)
    server = Server(host=host, port=port, token=token, name="counters")
    server.add_component(service.start, service.stop, name="counters-store")
    if gossip_listen is not None:
        transport = TcpTransport(name, gossip_listen, dict(peers or {}), token)
        node = GossipNode(state, transport, interval_s=gossip_interval_s)

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
