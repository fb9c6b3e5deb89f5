"""The core part of ``blocks demo``: three nodes, a ring, replicas, a crash and a token.

Each node is a ``Server`` (gRPC health, bearer-token auth) whose component is a
``TcpTransport`` listener holding a tiny in-memory map. A client-only transport places keys
with ``HashRing.preference_list`` and writes each to two replicas, then one node is stopped
and every key is still read from its surviving replica.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped,unused-ignore]

from blocks.core.errors import BlocksError, InvalidArgument, Unauthenticated
from blocks.core.hashing import HashRing
from blocks.core.net import TcpTransport
from blocks.core.rpc import connect_channel
from blocks.core.server import Server

__all__ = ["demo"]

TOKEN = "demo-token"
NODES = ("node-a", "node-b", "node-c")
REPLICAS = 2


class _DemoNode:
    """One node: a gRPC server for health plus a TCP transport serving a dict."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.data: dict[str, bytes] = {}
        self.transport = TcpTransport(name, listen=("127.0.0.1", 0), token=TOKEN)
        self.transport.serve(self._handle)
        self.server = Server(name=name, token=TOKEN)
        self.server.add_component(self.transport.start, self.transport.close, name="transport")

    async def _handle(self, source: str, message: Any) -> Any:
        match message:
            case ["put", str(key), bytes(value)]:
                self.data[key] = value
                return True
            case ["get", str(key)]:
                return self.data.get(key)
        raise InvalidArgument(f"unknown request from {source}")


async def demo(say: Callable[[str], None]) -> None:
    nodes = {name: _DemoNode(name) for name in NODES}
    client = TcpTransport("client", listen=None, token=TOKEN)
    try:
        for node in nodes.values():
            await node.server.start()
            address = node.transport.address
            assert address is not None
            client.add_peer(node.name, address)
            say(f"{node.name}: gRPC on {node.server.address}, data path on port {address[1]}")
        await _check_health(say, nodes["node-a"].server.address)

        ring = HashRing(NODES)
        keys = [f"user:{i}" for i in range(300)]
        started = time.perf_counter()
        for key in keys:
            for replica in ring.preference_list(key, REPLICAS):
                await client.request(replica, ["put", key, key.encode()])
        elapsed = time.perf_counter() - started
        owners = Counter(ring.owner(key) for key in keys)
        say(
            f"wrote {len(keys)} keys x {REPLICAS} replicas in {elapsed * 1000:.0f} ms; "
            f"owners: {dict(sorted(owners.items()))}"
        )

        victim = nodes["node-b"]
        await victim.server.stop(grace_s=1.0)
        say("stopped node-b; reading every key from the first live replica...")
        recovered = 0
        for key in keys:
            for replica in ring.preference_list(key, REPLICAS):
                if replica == victim.name:
                    continue
                if await client.request(replica, ["get", key]) == key.encode():
                    recovered += 1
                    break
        say(f"read {recovered}/{len(keys)} keys with node-b down")
        if recovered != len(keys):
            raise RuntimeError("a key was lost with one replica down")

        intruder = TcpTransport("intruder", listen=None, token="wrong-token")
        intruder_address = nodes["node-a"].transport.address
        assert intruder_address is not None
        intruder.add_peer("node-a", intruder_address)
        try:
            await intruder.request("node-a", ["get", keys[0]], timeout_s=2.0)
            raise RuntimeError("a wrong token was accepted")
        except Unauthenticated:
            say("a client with a wrong token was refused: Unauthenticated")
        finally:
            await intruder.close()
    finally:
        await client.close()
        for node in nodes.values():
            with contextlib.suppress(BlocksError):
                await node.server.stop(grace_s=1.0)


async def _check_health(say: Callable[[str], None], address: str) -> None:
    async with connect_channel(address, token=TOKEN) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        say(f"health check on {address}: {status}")
