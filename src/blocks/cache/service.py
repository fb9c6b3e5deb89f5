"""The cache node's gRPC service, and a server with a background TTL sweeper.

One node is one ``PolicyCache`` of opaque byte values behind the ``blocks.cache.Cache`` gRPC
service. Inputs are bounded: keys are at most ``KEY_BYTES_MAX`` bytes of UTF-8 (memcached's
limit), values at most ``value_bytes_max``; anything else is ``InvalidArgument`` and changes
nothing. With ``by_bytes`` the capacity is a byte budget and each entry weighs its key plus
its value; otherwise every entry weighs 1 and capacity is an entry count.

In a cluster (``peers`` or ``name`` given to ``build_server``) the node also runs membership
(``blocks.cache.gossip.GossipNode``): it answers ``Gossip`` and ``Members``, refuses data
calls made under another view with ``StaleView`` (FAILED_PRECONDITION), and announces its
departure when the server begins to stop.

Every node also serves get, put, delete and get_many on the framed-TCP data path
(``blocks.cache.datapath``, started before membership so that the node's first gossip
record carries its address). Both paths run the same ``*_nowait`` methods, so bounds, view
checks and TTLs are one code; ``grpc_data_calls`` counts the data calls that came by gRPC.

The sweeper is the "bounded background sweep" of the cache contract: every
``sweep_interval_s`` it removes at most ``SWEEP_ENTRIES_MAX`` expired entries, so dead entries
cannot pile up on a node nobody reads.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from blocks.cache import cache_pb2, cache_pb2_grpc
from blocks.cache.datapath import (
    DATA_CONNECTIONS_MAX,
    DATA_FRAME_BYTES_MAX,
    FRAME_SLACK_BYTES,
    DataListener,
    data_limits,
    parse_address,
)
from blocks.cache.gossip import LEAVE_DRAIN_S, GossipNode, from_proto, to_proto
from blocks.cache.local import PolicyCache
from blocks.cache.membership import MemberTable
from blocks.cache.simulate import make_policy
from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import InvalidArgument
from blocks.core.server import Server

__all__ = [
    "KEY_BYTES_MAX",
    "SWEEP_ENTRIES_MAX",
    "VALUE_BYTES_MAX",
    "CacheService",
    "build_server",
    "check_key",
]

KEY_BYTES_MAX = 250
VALUE_BYTES_MAX = 1024 * 1024
SWEEP_ENTRIES_MAX = 1000


def check_key(key: str) -> str:
    """Validate a node key: a non-empty str of at most ``KEY_BYTES_MAX`` UTF-8 bytes."""
    if not isinstance(key, str) or not key:
        raise InvalidArgument("key must be a non-empty string")
    if len(key.encode("utf-8", "surrogatepass")) > KEY_BYTES_MAX:
        raise InvalidArgument(f"key longer than {KEY_BYTES_MAX} bytes")
    return key


class CacheService(cache_pb2_grpc.CacheServicer):
    """gRPC front of one ``PolicyCache`` of bytes."""

    def __init__(
        self,
        cache: PolicyCache[str, bytes],
        *,
        policy_name: str,
        by_bytes: bool = False,
        value_bytes_max: int = VALUE_BYTES_MAX,
        gossip: GossipNode | None = None,
    ) -> None:
        self.cache = cache
        self.gossip = gossip
        self._policy_name = policy_name
        self._by_bytes = by_bytes
        self._value_bytes_max = value_bytes_max
        self.data: DataListener | None = None  # the TCP data path, when build_server adds it
        self.grpc_data_calls = 0  # Get, Put and Delete through gRPC (the data path counts its own)

    def _check_view(self, view_id: int) -> None:
        if self.gossip is not None:
            self.gossip.check_view(view_id)

    # -- the data calls, shared by gRPC and the TCP data path (blocks.cache.datapath) ------

    def get_nowait(self, key: str, view_id: int) -> bytes | None:
        """The value of ``key`` or None; ``StaleView`` under another view."""
        key = check_key(key)
        self._check_view(view_id)
        value: bytes | None = self.cache.get(key)
        return value

    def get_many_nowait(self, keys: list[str], view_id: int) -> list[bytes | None]:
        """The values of ``keys`` in order, None for each miss (one view check for all)."""
        checked = [check_key(key) for key in keys]
        self._check_view(view_id)
        return [self.cache.get(key) for key in checked]

    def put_nowait(self, key: str, value: bytes, ttl_s: float, weight: int, view_id: int) -> None:
        """Store ``value``; ``ttl_s`` 0 means no expiry, ``weight`` 0 the default weight.
        ``InvalidArgument`` (nothing stored) for a bad key, value, ttl or weight."""
        key = check_key(key)
        if not isinstance(value, bytes):
            raise InvalidArgument("value must be bytes")
        if len(value) > self._value_bytes_max:
            raise InvalidArgument(f"value larger than {self._value_bytes_max} bytes")
        if ttl_s < 0:
            raise InvalidArgument("ttl_s must be >= 0")
        if weight < 0:
            raise InvalidArgument("weight must be >= 0")
        self._check_view(view_id)
        weight = weight or 1
        if self._by_bytes:
            weight = max(1, len(key.encode()) + len(value))
        self.cache.put(key, value, ttl=ttl_s or None, weight=weight)

    def delete_nowait(self, key: str, view_id: int) -> bool:
        key = check_key(key)
        self._check_view(view_id)
        return self.cache.delete(key)

    async def Get(self, request: Any, context: Any) -> Any:  # gRPC names are CamelCase
        self.grpc_data_calls += 1
        value = self.get_nowait(request.key, request.view_id)
        if value is None:
            return cache_pb2.GetReply(found=False)
        return cache_pb2.GetReply(found=True, value=value)

    async def Put(self, request: Any, context: Any) -> Any:
        self.grpc_data_calls += 1
        self.put_nowait(
            request.key, bytes(request.value), request.ttl_s, request.weight, request.view_id
        )
        return cache_pb2.PutReply()

    async def Delete(self, request: Any, context: Any) -> Any:
        self.grpc_data_calls += 1
        return cache_pb2.DeleteReply(deleted=self.delete_nowait(request.key, request.view_id))

    async def Gossip(self, request: Any, context: Any) -> Any:
        if self.gossip is None:
            raise InvalidArgument("this node runs alone (no --peer, no --name)")
        self.gossip.receive(from_proto(request))
        return to_proto(self.gossip.table.records(), self.gossip.view_id)

    async def Members(self, request: Any, context: Any) -> Any:
        if self.gossip is None:
            raise InvalidArgument("this node runs alone (no --peer, no --name)")
        return to_proto(self.gossip.table.records(), self.gossip.view_id)

    async def Stats(self, request: Any, context: Any) -> Any:
        stats = self.cache.stats()
        return cache_pb2.StatsReply(
            hits=stats.hits,
            misses=stats.misses,
            evictions=stats.evictions,
            expirations=stats.expirations,
            size=stats.size,
            weight=stats.weight,
            capacity=stats.capacity,
            policy=self._policy_name,
        )


class _Sweeper:
    def __init__(self, cache: PolicyCache[str, bytes], interval_s: float) -> None:
        self._cache, self._interval_s = cache, interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            self._cache.sweep(SWEEP_ENTRIES_MAX)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def build_server(
    *,
    capacity: int = 100_000,
    policy: str = "wtinylfu",
    by_bytes: bool = False,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    sweep_interval_s: float = 1.0,
    clock: Clock | None = None,
    name: str | None = None,
    peers: tuple[str, ...] = (),
    advertise: str | None = None,
    data_host: str | None = None,
    data_port: int | None = 0,
    data_connections_max: int = DATA_CONNECTIONS_MAX,
    data_frame_bytes_max: int = DATA_FRAME_BYTES_MAX,
    leave_drain_s: float = LEAVE_DRAIN_S,
) -> tuple[Server, CacheService]:
    """A ``Server`` (not yet started) hosting one cache node.

    With ``name`` or ``peers`` the node joins a cluster: ``peers`` are seed addresses,
    ``advertise`` the address the others reach this node at (default ``host:port``, so
    ``port`` must then be fixed). On stop such a node announces its leave and then answers
    ``StaleView`` for ``leave_drain_s`` (>= 0; default ``LEAVE_DRAIN_S``) so clients learn of
    it from the refusals; 0 skips that wait (tests that watch no leave).

    Every node also serves the framed-TCP data path (``blocks.cache.datapath``) on
    ``data_host`` (default ``host``) and ``data_port`` (default 0: any free port), holding at
    most ``data_connections_max`` connections and frames of at most ``data_frame_bytes_max``;
    a cluster node gossips where it listens (at ``advertise``'s host), so clients find it.
    ``data_port=None`` turns the data path off (gRPC only).
    """
    if sweep_interval_s <= 0:
        raise InvalidArgument("sweep_interval_s must be > 0")
    clock = clock if clock is not None else SystemClock()
    cache: PolicyCache[str, bytes] = PolicyCache(make_policy(policy, capacity), clock=clock)
    gossip = None
    if name is not None or peers:
        if advertise is None and port == 0:
            raise InvalidArgument("a cluster node needs a fixed --port or an --advertise address")
        address = advertise or f"{host}:{port}"
        table = MemberTable(name or address, address, clock)
        gossip = GossipNode(table, cache, seeds=peers, token=token, leave_drain_s=leave_drain_s)
    service = CacheService(cache, policy_name=policy, by_bytes=by_bytes, gossip=gossip)
    if data_port is not None:
        limits = data_limits(
            frame_bytes_max=data_frame_bytes_max, connections_max=data_connections_max
        )
        if limits.frame_bytes_max < VALUE_BYTES_MAX + FRAME_SLACK_BYTES:
            raise InvalidArgument("data_frame_bytes_max must hold the largest value")
        service.data = DataListener(
            service,
            gossip.table.name if gossip is not None else (name or "cache"),
            host=data_host or host,
            port=data_port,
            token=token,
            limits=limits,
            advertise_host=parse_address(advertise)[0] if advertise else None,
            on_bound=gossip.table.serve_data_at if gossip is not None else None,
        )
    server = Server(host=host, port=port, token=token, name="cache")
    server.add_service(
        cache_pb2_grpc.add_CacheServicer_to_server, service, health_name="blocks.cache.Cache"
    )
    sweeper = _Sweeper(cache, sweep_interval_s)
    server.add_component(sweeper.start, sweeper.stop, name="ttl-sweeper")
    if service.data is not None:  # bound before gossip starts, so the first record has it
        server.add_component(service.data.start, service.data.stop, name="data-path")
    if gossip is not None:
        server.add_component(gossip.start, gossip.stop, name="membership")
        server.add_stopping_hook(gossip.leave, name="leave the cluster")
    return server, service
