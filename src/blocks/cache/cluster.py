"""A sharded cache cluster client: ring placement, hot-key replicas, and failures as misses.

Theory of operation. Nodes are named; a *placement* maps a key to an ordered list of nodes:
``"ring"`` uses ``blocks.core.hashing.HashRing`` (xxh3, virtual nodes), ``"ketama"`` uses
``KetamaRing`` so that keys land on the node libketama-based memcached clients chose (node
names must then be the ``host:port`` strings those clients used). Every key has one *owner*.

Hot keys. Each ``get`` feeds a ``SpaceSaving`` heavy-hitter tracker. A key whose guaranteed
count (the tracker's lower bound) is at least ``hot_share`` of the traffic (after ``warmup``
requests) is *hot*: reads pick one of the first ``hot_replicas`` nodes of its preference
list at random, spreading the load one node could not carry. A replica that misses reads the owner and keeps a copy
for ``replica_ttl_s`` seconds, which bounds how stale a replica can be; ``put`` of a hot key
writes every replica, and ``delete`` always clears all of them. The tracker is halved every
``decay_every`` requests so that yesterday's hot keys cool down.

Failures. A call that fails with a retryable error (``Unavailable``, ``Timeout``, or an
``OSError``) marks the node *down* for ``down_for_s`` seconds (read from the injected clock)
and removes it from placement, so its keys move to their next node; the failed ``get``
counts as a miss and the failed ``put`` is dropped. A cache may forget anything, so losing a
node costs exactly misses, never errors. After ``down_for_s`` the node is tried again.
``Overloaded`` is backpressure, not a failure: it reaches the caller and the node stays up.
Caveat: entries written on a node before it went down may be stale when it comes back;
TTLs bound that.

Values are packed with ``blocks.core.codec`` (msgpack), so anything msgpack can carry works.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from typing import Any, Protocol

from blocks.cache.ketama import KetamaRing
from blocks.cache.service import check_key
from blocks.cache.sketch import SpaceSaving
from blocks.core.clock import Clock, SystemClock
from blocks.core.codec import pack, unpack
from blocks.core.errors import BlocksError, InvalidArgument, Overloaded, Unavailable
from blocks.core.hashing import HashRing

__all__ = ["PLACEMENTS", "CacheNode", "ClusterClient", "LocalNode"]

PLACEMENTS = ("ring", "ketama")


class CacheNode(Protocol):
    """One node as the cluster sees it (``CacheClient`` and ``LocalNode`` both fit)."""

    async def get(self, key: str) -> bytes | None: ...

    async def put(
        self, key: str, value: bytes, ttl: float | None = None, weight: int = 1
    ) -> None: ...

    async def delete(self, key: str) -> bool: ...


class LocalNode:
    """An in-process node around any ``Cache`` (for tests, simulation and notebooks).

    ``fail`` makes every call raise ``Unavailable``, as a crashed node would.
    """

    def __init__(self, cache: Any) -> None:
        self.cache = cache
        self.fail = False
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.fail:
            raise Unavailable("node is down")

    async def get(self, key: str) -> bytes | None:
        self._check()
        value: bytes | None = self.cache.get(key)
        return value

    async def put(self, key: str, value: bytes, ttl: float | None = None, weight: int = 1) -> None:
        self._check()
        self.cache.put(key, value, ttl=ttl, weight=weight)

    async def delete(self, key: str) -> bool:
        self._check()
        return bool(self.cache.delete(key))


def _is_node_failure(error: BaseException) -> bool:
    if isinstance(error, Overloaded):  # backpressure from a live node (or our own queue)
        return False
    if isinstance(error, BlocksError):
        return error.retryable
    return isinstance(error, OSError | asyncio.TimeoutError)


class ClusterClient:
    """Routes keys to cache nodes; see the module docstring for placement and failures."""

    def __init__(
        self,
        nodes: Mapping[str, CacheNode],
        *,
        placement: str = "ring",
        hot_replicas: int = 3,
        hot_share: float = 0.01,
        warmup: int = 1000,
        tracker_size: int = 64,
        decay_every: int = 100_000,
        replica_ttl_s: float = 2.0,
        down_for_s: float = 5.0,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not nodes:
            raise InvalidArgument("a cluster needs at least one node")
        if placement not in PLACEMENTS:
            raise InvalidArgument(f"placement must be one of {PLACEMENTS}, got {placement!r}")
        if hot_replicas < 1 or not 0 < hot_share <= 1 or replica_ttl_s <= 0 or down_for_s <= 0:
            raise InvalidArgument("hot_replicas >= 1, 0 < hot_share <= 1, positive durations")
        self._nodes = dict(nodes)
        self._placement_kind = placement
        self._hot_replicas = hot_replicas
        self._hot_share = hot_share
        self._warmup = warmup
        self._decay_every = decay_every
        self._replica_ttl_s = replica_ttl_s
        self._down_for_s = down_for_s
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._random = rng if rng is not None else random.Random()
        self.tracker = SpaceSaving(tracker_size)
        self._down_until: dict[str, float] = {}
        self._placement: HashRing | KetamaRing = self._build_placement()
        self.misses_from_failures = 0

    # -- membership -----------------------------------------------------------------------

    def _build_placement(self) -> HashRing | KetamaRing:
        live = [name for name in self._nodes if name not in self._down_until]
        if self._placement_kind == "ketama":
            return KetamaRing(live)
        return HashRing(live)

    def replace_nodes(self, nodes: Mapping[str, CacheNode]) -> None:
        """Adopt a new membership (``blocks.cache.discovery``): placement moves with it, and
        nodes that stayed keep their down marks."""
        if not nodes:
            raise InvalidArgument("a cluster needs at least one node")
        self._nodes = dict(nodes)
        self._down_until = {n: t for n, t in self._down_until.items() if n in self._nodes}
        self._placement = self._build_placement()

    @property
    def live_nodes(self) -> list[str]:
        self._maybe_revive()
        return [name for name in self._nodes if name not in self._down_until]

    def _maybe_revive(self) -> None:
        if not self._down_until:
            return
        now = self._clock.monotonic()
        revived = [name for name, until in self._down_until.items() if now >= until]
        for name in revived:
            del self._down_until[name]
        if revived:
            self._placement = self._build_placement()

    def _mark_down(self, name: str) -> None:
        self._down_until[name] = self._clock.monotonic() + self._down_for_s
        self._placement = self._build_placement()

    def owner(self, key: str) -> str | None:
        """The live node that owns ``key`` (None when every node is down)."""
        self._maybe_revive()
        return self._placement.owner(key) if len(self._placement) else None

    def replicas(self, key: str) -> list[str]:
        """The live nodes that may hold ``key``: the owner first, then hot replicas."""
        self._maybe_revive()
        if not len(self._placement):
            return []
        return self._placement.preference_list(key, min(self._hot_replicas, len(self._placement)))

    def is_hot(self, key: str) -> bool:
        """Whether ``key`` has at least ``hot_share`` of the reads, on the tracker's lower
        bound: its estimate would call any key just counted in a full table hot, since the
        key inherits the smallest count there (on uniform reads, about 1/64 of them)."""
        total = self.tracker.total
        return total >= self._warmup and self.tracker.guaranteed(key) >= self._hot_share * total

    # -- calls ----------------------------------------------------------------------------

    async def _call(self, name: str, method: str, *args: Any) -> Any:
        try:
            return await getattr(self._nodes[name], method)(*args)
        except Exception as error:
            if not _is_node_failure(error):
                raise
            self._mark_down(name)
            return _FAILED

    async def get(self, key: str) -> Any:
        """The cached value, or ``None`` on a miss (including a miss caused by a dead node)."""
        check_key(key)
        self.tracker.add(key)
        if self.tracker.total >= self._decay_every:
            self.tracker.decay()
        hot = self.is_hot(key)
        if hot:
            nodes = self.replicas(key)
        else:  # the common case: the owner alone, without building a preference list
            owner_only = self.owner(key)
            nodes = [] if owner_only is None else [owner_only]
        if not nodes:
            self.misses_from_failures += 1
            return None
        owner = nodes[0]
        chosen = self._random.choice(nodes) if hot else owner
        data = await self._call(chosen, "get", key)
        if chosen != owner and (data is None or data is _FAILED):
            replica_alive = data is None
            data = await self._call(owner, "get", key)
            if isinstance(data, bytes) and replica_alive:
                await self._call(chosen, "put", key, data, self._replica_ttl_s)
        if data is _FAILED:
            self.misses_from_failures += 1
            return None
        return None if data is None else unpack(data)

    async def get_many(self, keys: list[str]) -> list[Any]:
        """The values of ``keys`` in order, ``None`` for each miss: one call per owner (a node
        with ``get_many`` answers its keys at once), all owners at once. Reads owners only
        (no hot-key replicas); a failed node's keys are misses, as in ``get``."""
        by_owner: dict[str, list[int]] = {}
        for position, key in enumerate(keys):
            check_key(key)
            owner = self.owner(key)
            if owner is None:
                self.misses_from_failures += 1
            else:
                by_owner.setdefault(owner, []).append(position)
        values: list[Any] = [None] * len(keys)

        async def read(name: str, positions: list[int]) -> None:
            wanted = [keys[p] for p in positions]
            if hasattr(self._nodes[name], "get_many"):
                data = await self._call(name, "get_many", wanted)
            else:
                data = [await self._call(name, "get", key) for key in wanted]
            if data is _FAILED:
                data = [_FAILED] * len(wanted)
            for position, item in zip(positions, data, strict=True):
                if item is _FAILED:
                    self.misses_from_failures += 1
                elif item is not None:
                    values[position] = unpack(item)

        await asyncio.gather(*(read(name, group) for name, group in by_owner.items()))
        return values

    async def put(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store on the owner (and on every replica while the key is hot); best effort."""
        check_key(key)
        data = pack(value)
        nodes = self.replicas(key)
        targets = nodes if self.is_hot(key) else nodes[:1]
        for position, name in enumerate(targets):
            replica_ttl = (
                ttl if position == 0 else min(ttl or self._replica_ttl_s, self._replica_ttl_s)
            )
            await self._call(name, "put", key, data, replica_ttl)

    async def delete(self, key: str) -> bool:
        """Remove from the owner and from every node that may hold a replica."""
        check_key(key)
        deleted = False
        for name in self.replicas(key):
            if await self._call(name, "delete", key) is True:
                deleted = True
        return deleted


_FAILED: Any = object()
