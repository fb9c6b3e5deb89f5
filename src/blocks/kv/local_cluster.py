"""``LocalCluster``: several ``KVNode`` in this process, with handles to break them.

Theory of operation. Each node is a ``KVNode`` on its own transport: a ``MemoryNetwork``
(default; fast, and deterministic under ``blocks.testing.run_simulation``) or real TCP on
127.0.0.1 with OS-chosen ports (``transport="tcp"``, what ``blocks demo`` shows). Every node
starts knowing all the others as seeds; ``add_node`` starts one knowing them all, and gossip
tells the rest. With ``data_dir`` each node keeps its replicas in a ``Bitcask`` under
``data_dir/<node>``; without it, in an in-memory store that survives ``crash``/``restart``
(the simulator's durable disk).

Handles: ``crash(name)`` stops a node as ``kill -9`` would (volatile state gone, store kept),
``restart(name)`` brings it back from its store, ``partition(groups)``/``heal()`` cut links
(memory network only), ``add_node()`` joins a node and ``remove_node(name)`` makes one leave
after handing its keys to their new owners. ``client()`` returns a ``KVClient``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import FailedPrecondition, InvalidArgument
from blocks.core.memory_network import MemoryNetwork
from blocks.core.net import TcpTransport
from blocks.core.transport import Transport
from blocks.kv.client import KVClient, parse_address
from blocks.kv.cluster.driver import KVNode, NodeConfig
from blocks.kv.cluster.membership import MembershipConfig
from blocks.kv.cluster.node import QuorumConfig
from blocks.kv.cluster.persist import BitcaskObjectStore, MemoryObjectStore, ObjectStore
from blocks.kv.engine.bitcask import SyncPolicy

__all__ = ["LocalCluster"]

NODES_MAX = 64


class LocalCluster:
    """``async with LocalCluster(nodes=5) as cluster: client = cluster.client()``."""

    def __init__(
        self,
        nodes: int = 3,
        replicas: int = 3,
        read_quorum: int = 2,
        write_quorum: int = 2,
        data_dir: str | Path | None = None,
        *,
        lww: bool = False,
        transport: Literal["memory", "tcp"] = "memory",
        network: MemoryNetwork | None = None,
        clock: Clock | None = None,
        seed: int = 0,
        sync: SyncPolicy = "batch",
        token: str | None = None,
        config: NodeConfig | None = None,
    ) -> None:
        if not 1 <= nodes <= NODES_MAX:
            raise InvalidArgument(f"nodes must be in [1, {NODES_MAX}]")
        if transport not in ("memory", "tcp"):
            raise InvalidArgument("transport must be 'memory' or 'tcp'")
        quorum = QuorumConfig(
            replicas=replicas, read_quorum=read_quorum, write_quorum=write_quorum, lww=lww
        )
        self.config = config or NodeConfig(
            quorum=quorum, membership=MembershipConfig(suspect_after_s=0.6)
        )
        self.kind = transport
        self.network = network if network is not None else MemoryNetwork(seed=seed)
        self.clock = clock or SystemClock()
        self.rng = random.Random(seed)
        self.data_dir = None if data_dir is None else Path(data_dir)
        self.sync: SyncPolicy = sync
        self.token = token
        self.nodes: dict[str, KVNode] = {}
        self._stores: dict[str, ObjectStore] = {}
        self._ports: dict[str, int] = {}
        self._clients: list[KVClient] = []
        self._initial = [f"n{i + 1}" for i in range(nodes)]
        self._counter = nodes

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> LocalCluster:
        transports = {name: await self._transport(name) for name in self._initial}
        addresses = {name: self._address(name) for name in self._initial}
        for name, transport in transports.items():
            seeds = {n: a for n, a in addresses.items() if n != name}
            self._wire_peers(transport, seeds)
            self.nodes[name] = self._node(name, transport, seeds)
        for node in self.nodes.values():
            await node.start()
        await self.wait_healthy()
        return self

    async def wait_healthy(self, timeout_s: float = 10.0) -> bool:
        """Wait until every running node sees every running node healthy; False on timeout."""
        deadline = self.clock.monotonic() + timeout_s
        while self.clock.monotonic() < deadline:
            running = {n for n, node in self.nodes.items() if node.running}
            views = [node.membership.healthy() for node in self.nodes.values() if node.running]
            if all(running <= view for view in views):
                return True
            await asyncio.sleep(self.config.tick_s)
        return False

    async def stop(self) -> None:
        for client in self._clients:
            await client.close()
        self._clients.clear()
        for node in self.nodes.values():
            await node.stop()
            if node.transport is not None:
                await node.transport.close()
        self.nodes.clear()

    async def __aenter__(self) -> LocalCluster:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _node(self, name: str, transport: Transport, seeds: dict[str, str]) -> KVNode:
        return KVNode(
            name,
            transport,
            config=self.config,
            clock=self.clock,
            rng=random.Random(self.rng.getrandbits(64)),
            seeds=seeds,
            address=self._address(name),
            store=self._store(name),
        )

    def _store(self, name: str) -> ObjectStore:
        if self.data_dir is None:
            return self._stores.setdefault(name, MemoryObjectStore())
        return BitcaskObjectStore(self.data_dir / name, sync=self.sync)

    async def _transport(self, name: str) -> Transport:
        if self.kind == "memory":
            return self.network.transport(name)
        port = self._ports.get(name, 0)
        transport = TcpTransport(name, ("127.0.0.1", port), token=self.token)
        await transport.start()
        assert transport.address is not None
        self._ports[name] = transport.address[1]
        return transport

    def _address(self, name: str) -> str:
        return f"127.0.0.1:{self._ports[name]}" if name in self._ports else ""

    @staticmethod
    def _wire_peers(transport: Transport, seeds: dict[str, str]) -> None:
        if isinstance(transport, TcpTransport):
            for peer, address in seeds.items():
                transport.add_peer(peer, parse_address(address))

    # -- handles -----------------------------------------------------------------------------

    def client(
        self, *, timeout_s: float = 5.0, balance: Literal["first", "random"] = "first"
    ) -> KVClient:
        """A client that reaches every node (closed with the cluster)."""
        names = list(self.nodes)
        if self.kind == "memory":
            transport: Transport = self.network.transport(f"client-{len(self._clients) + 1}")
        else:
            peers = {n: ("127.0.0.1", self._ports[n]) for n in names}
            transport = TcpTransport(
                f"client-{len(self._clients) + 1}", listen=None, peers=peers, token=self.token
            )
        client = KVClient(
            transport,
            names,
            timeout_s=timeout_s,
            owns_transport=True,
            rng=random.Random(self.rng.getrandbits(64)),
            balance=balance,
        )
        self._clients.append(client)
        return client

    def node(self, name: str) -> KVNode:
        try:
            return self.nodes[name]
        except KeyError:
            raise InvalidArgument(f"unknown node {name!r}") from None

    async def crash(self, name: str) -> None:
        """Kill ``name``: in-flight work and memory are lost, its store is kept."""
        node = self.node(name)
        node.crash()
        if self.kind == "memory":
            self.network.crash(name)
        else:
            await node.transport.close()
        if self.data_dir is not None:
            node.store.close()  # a killed process's lock dies with it

    async def restart(self, name: str) -> None:
        """Start a crashed node again from its store, on the same address."""
        node = self.node(name)
        if node.running:
            raise FailedPrecondition(f"node {name!r} is running")
        if self.kind == "memory":
            self.network.restart(name)
        else:
            node.transport = await self._transport(name)
            self._wire_peers(node.transport, dict(node._seeds))
        if self.data_dir is not None:
            node.store = self._store(name)
        await node.start()
        await self.wait_healthy()

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Cut the nodes into ``groups``; this cluster's clients join the first group."""
        self._memory_only("partition")
        split = [list(group) for group in groups]
        if split:
            split[0] += [client.transport.name for client in self._clients]
        self.network.partition(split)

    def heal(self) -> None:
        self._memory_only("heal")
        self.network.heal()

    def _memory_only(self, what: str) -> None:
        if self.kind != "memory":
            raise FailedPrecondition(f"{what} needs the memory network")

    async def add_node(self) -> str:
        """Start a new node that joins through gossip; return its name."""
        if len(self.nodes) >= NODES_MAX:
            raise InvalidArgument(f"at most {NODES_MAX} nodes")
        self._counter += 1
        name = f"n{self._counter}"
        transport = await self._transport(name)
        seeds = {n: self._address(n) for n in self.nodes}
        self._wire_peers(transport, seeds)
        for other in self.nodes.values():
            if isinstance(other.transport, TcpTransport):
                other.transport.add_peer(name, parse_address(self._address(name)))
        self.nodes[name] = node = self._node(name, transport, seeds)
        await node.start()
        await self.wait_healthy()
        return name

    async def remove_node(self, name: str, timeout_s: float = 10.0) -> bool:
        """Make ``name`` leave, handing its keys over, then stop it; True if all moved."""
        node = self.node(name)
        moved = await node.leave(timeout_s)
        await node.stop()
        await node.transport.close()
        del self.nodes[name]
        return moved
