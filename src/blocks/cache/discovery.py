"""``MemberCluster``: a cache cluster client that learns the membership from the nodes.

Theory of operation
-------------------
The client asks a node for its membership table (``Members``, on gRPC), builds the view (the
live members and their ``view_id``, ``blocks.cache.membership.View``) and places keys with
the same ring the nodes use (``ClusterClient``'s ``"ring"`` placement over node names). Data
calls go over each node's framed-TCP data path (``blocks.cache.datapath``: one connection
per node, every call pipelined on it) when its member record announces one, else over gRPC
(``data_path=False`` forces gRPC). A node that leaves the view has its connection closed:
nothing is sent to it after the client adopts the view without it. Every data call carries
the view id. A node whose view differs answers ``FAILED_PRECONDITION``
(``StaleView``); the client then refreshes its view and tries once more. If the views still
differ (gossip has not settled yet) a ``get`` is a miss and a ``put`` is dropped: a cache may
forget, but it never answers from a view it does not share. A ``delete`` that cannot reach
the key's holders raises, since a delete the caller believes done must be done.

Refreshes also happen every ``refresh_interval_s`` (on the injected clock, checked at the
start of a call: there is no background task), so an idle client learns of joins and
leaves before its next call lands on the wrong node. A refresh asks the current members
first, then the seeds, and takes the first table it gets.

What a caller sees while the membership moves (docs/cache.md, "Cluster membership"):
misses for the keys that moved, never a value older than the move, never an error for a
``get`` or ``put``. A burst of calls larger than a node's call queue waits for room
(``blocks.cache.dataclient``, backpressure); it does not mark the node down.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from blocks.cache.client import CacheClient
from blocks.cache.cluster import ClusterClient
from blocks.cache.dataclient import DataNode
from blocks.cache.membership import Member, Status, View
from blocks.core.clock import Clock, SystemClock
from blocks.core.closing import AsyncClosing
from blocks.core.errors import BlocksError, FailedPrecondition, InvalidArgument, Unavailable

__all__ = ["REFRESH_INTERVAL_S", "MemberCluster"]

REFRESH_INTERVAL_S = 1.0

T = TypeVar("T")


class _ViewedNode:
    """One node as ``ClusterClient`` sees it, every call stamped with the current view:
    through the node's TCP data path (``DataNode``) when it announces one, else gRPC."""

    def __init__(self, client: CacheClient | DataNode, owner: MemberCluster) -> None:
        self.client = client
        self._owner = owner

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        if isinstance(self.client, DataNode):
            return await self.client.get_many(keys, view_id=self._owner.view.view_id)
        return [await self.get(key) for key in keys]

    async def get(self, key: str) -> bytes | None:
        return await self.client.get(key, view_id=self._owner.view.view_id)

    async def put(self, key: str, value: bytes, ttl: float | None = None, weight: int = 1) -> None:
        await self.client.put(key, value, ttl, weight, view_id=self._owner.view.view_id)

    async def delete(self, key: str) -> bool:
        return await self.client.delete(key, view_id=self._owner.view.view_id)


class MemberCluster(AsyncClosing):
    """``cluster = await MemberCluster.connect(["127.0.0.1:7305"])``; then get/put/delete."""

    def __init__(
        self,
        seeds: Sequence[str],
        *,
        token: str | None = None,
        timeout_s: float = 1.0,
        refresh_interval_s: float = REFRESH_INTERVAL_S,
        clock: Clock | None = None,
        data_path: bool = True,
        **cluster_options: Any,
    ) -> None:
        if not seeds:
            raise InvalidArgument("give at least one seed address")
        if refresh_interval_s <= 0:
            raise InvalidArgument("refresh_interval_s must be > 0")
        self.seeds = list(seeds)
        self._token = token
        self._timeout_s = timeout_s
        self._refresh_interval_s = refresh_interval_s
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._cluster_options = cluster_options
        self._clients: dict[str, CacheClient] = {}  # address -> client
        self._use_data_path = data_path
        self._data_nodes: dict[str, DataNode] = {}  # name -> client of its data path
        self._cluster: ClusterClient | None = None
        self.view = View((), 0)
        self._refreshed_at = float("-inf")
        self.refreshes = 0
        self.stale_answers = 0

    @classmethod
    async def connect(cls, seeds: Sequence[str] | str, **options: Any) -> MemberCluster:
        cluster = cls([seeds] if isinstance(seeds, str) else list(seeds), **options)
        await cluster.refresh()
        return cluster

    @property
    def members(self) -> list[str]:
        """The names of the nodes the client places keys on."""
        return self.view.names

    @property
    def live_nodes(self) -> list[str]:
        """The members keys are placed on now: ``members`` less those marked down after a
        failed call (a full call queue, ``Overloaded``, never marks a node down)."""
        return [] if self._cluster is None else self._cluster.live_nodes

    @property
    def misses_from_failures(self) -> int:
        """Gets answered as misses because their node had failed (or every node was down)."""
        return 0 if self._cluster is None else self._cluster.misses_from_failures

    def _client(self, address: str) -> CacheClient:
        if address not in self._clients:
            self._clients[address] = CacheClient(
                address, token=self._token, timeout_s=self._timeout_s
            )
        return self._clients[address]

    async def refresh(self) -> View:
        """Fetch the membership from a node (members first, then seeds) and adopt it."""
        self._refreshed_at = self._clock.monotonic()
        candidates: Iterable[str] = [a for _, a in self.view.members] + self.seeds
        errors = []
        for address in dict.fromkeys(candidates):
            try:
                records, _ = await self._client(address).members()
            except BlocksError as error:
                errors.append(f"{address}: {error}")
                continue
            live = [m for m in records if m.status is Status.ALIVE]
            if live:
                await self._adopt(live)
                return self.view
        raise Unavailable("no cache node answered with a membership: " + "; ".join(errors))

    async def _adopt(self, live: list[Member]) -> None:
        """Place keys on ``live``; reach each node by its data path when it has one."""
        self.refreshes += 1
        view = View.of((m.name, m.address) for m in live)
        data_addresses = {m.name: m.data_address for m in live if self._use_data_path}
        unchanged = {name: node.address for name, node in self._data_nodes.items()}
        if view.view_id == self.view.view_id and unchanged == {
            name: address for name, address in data_addresses.items() if address
        }:
            return
        self.view = view
        stale = [  # gone from the view, or listening elsewhere now
            self._data_nodes.pop(name)
            for name, node in list(self._data_nodes.items())
            if data_addresses.get(name) != node.address
        ]
        nodes = {m.name: _ViewedNode(self._node_client(m), self) for m in live}
        if self._cluster is None:
            self._cluster = ClusterClient(nodes, placement="ring", **self._cluster_options)
        else:
            self._cluster.replace_nodes(nodes)
        for node in stale:  # after the switch: calls in flight to them fail as Unavailable
            await node.close()

    def _node_client(self, member: Member) -> CacheClient | DataNode:
        if not (self._use_data_path and member.data_address):
            return self._client(member.address)
        if member.name not in self._data_nodes:
            self._data_nodes[member.name] = DataNode(
                member.name, member.data_address, token=self._token, timeout_s=self._timeout_s
            )
        return self._data_nodes[member.name]

    @property
    def data_path_nodes(self) -> list[str]:
        """The members reached through their TCP data path (the others: gRPC)."""
        return sorted(self._data_nodes)

    async def _ready(self) -> ClusterClient:
        if self._cluster is None or (
            self._clock.monotonic() - self._refreshed_at >= self._refresh_interval_s
        ):
            try:
                await self.refresh()
            except Unavailable:
                if self._cluster is None:
                    raise
        assert self._cluster is not None
        return self._cluster

    async def _in_view(
        self, call: Callable[[ClusterClient], Awaitable[T]]
    ) -> tuple[bool, T | None]:
        """Run ``call`` on the current placement; on a stale view refresh and try once more.
        ``(False, None)`` when the views still disagree."""
        for attempt in range(2):
            cluster = await self._ready()
            try:
                return True, await call(cluster)
            except FailedPrecondition:
                self.stale_answers += 1
                if attempt == 0:
                    self._refreshed_at = float("-inf")
        return False, None

    async def get(self, key: str) -> Any:
        """The cached value, or ``None`` (a miss, also while the membership settles)."""
        _, value = await self._in_view(lambda cluster: cluster.get(key))
        return value

    async def put(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store on the key's holders; dropped (as a cache may) while views disagree."""
        await self._in_view(lambda cluster: cluster.put(key, value, ttl))

    async def get_many(self, keys: Sequence[str]) -> list[Any]:
        """The values of ``keys`` in order (``None`` for a miss): one request per node, all
        nodes at once. All misses while the membership settles."""
        keys = list(keys)
        done, values = await self._in_view(lambda cluster: cluster.get_many(keys))
        return values if done and values is not None else [None] * len(keys)

    async def delete(self, key: str) -> bool:
        """Remove the key from its holders; raises ``Unavailable`` if the views disagree."""
        done, deleted = await self._in_view(lambda cluster: cluster.delete(key))
        if not done:
            raise Unavailable(f"could not delete {key!r}: the cluster's membership is moving")
        return bool(deleted)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
        for node in self._data_nodes.values():
            await node.close()
        self._data_nodes.clear()
