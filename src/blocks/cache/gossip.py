"""The cache node's membership driver: gossip rounds, the view check, purge on view change.

Theory of operation
-------------------
``GossipNode`` owns one node's ``MemberTable`` (``blocks.cache.membership``). Every
``interval_s`` it runs a round: ``tick`` (heartbeat, failure detection), then a push-pull
exchange of whole tables with one live peer picked at random, and, every
``SEED_EVERY_ROUNDS`` rounds or while it knows no live peer, with one of its seeds too (so
two halves that lost touch find each other again through the seeds). A peer that does not
answer within ``timeout_s`` is simply skipped: failure detection is the heartbeat's job.

When the view changes (a join, a leave, a death), the node drops every entry whose key it
does not own in the new view (``MemberTable.keeps``), hot-key replica copies included (they
live ``replica_ttl_s`` only anyway). A key that moves away and later comes back therefore
finds no entry from before it left: the node answers a miss, never an old value. (A node
keeps the copies of keys it owns in the new view; a hot-key replica copy that becomes the
owner's copy this way is at most the client's ``replica_ttl_s`` old.)

Data calls carry the client's ``view_id``; ``check_view`` refuses one from another view with
``StaleView`` (the client refreshes and retries). ``leave`` (run when the server begins to
stop, while it still serves) marks the node ``LEFT``, pushes that to every peer, and keeps
answering ``StaleView`` for ``leave_drain_s``, so clients learn of the departure from the
node itself instead of from a refused connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterable
from typing import Any

from blocks.cache import cache_pb2, cache_pb2_grpc
from blocks.cache.local import PolicyCache
from blocks.cache.membership import Member, MemberTable, StaleView, Status
from blocks.core.errors import InvalidArgument
from blocks.core.rpc import connect_channel

__all__ = [
    "GOSSIP_INTERVAL_S",
    "LEAVE_DRAIN_S",
    "SEED_EVERY_ROUNDS",
    "GossipNode",
    "from_proto",
    "to_proto",
]

logger = logging.getLogger(__name__)

GOSSIP_INTERVAL_S = 0.2
GOSSIP_TIMEOUT_S = 2.0
LEAVE_DRAIN_S = 1.0
SEED_EVERY_ROUNDS = 10


def to_proto(records: Iterable[Member], view_id: int) -> Any:
    return cache_pb2.GossipMessage(
        members=[
            cache_pb2.MemberRecord(
                name=m.name,
                address=m.address,
                incarnation=m.incarnation,
                status=int(m.status),
                heartbeat=m.heartbeat,
                data_address=m.data_address,
            )
            for m in records
        ],
        view_id=view_id,
    )


def from_proto(message: Any) -> list[Member]:
    records = []
    for record in message.members:
        try:
            status = Status(record.status)
        except ValueError:
            raise InvalidArgument(f"unknown member status {record.status}") from None
        records.append(
            Member(
                record.name,
                record.address,
                record.incarnation,
                status,
                record.heartbeat,
                record.data_address,
            )
        )
    return records


class GossipNode:
    """Membership for one cache node; see the module docstring."""

    def __init__(
        self,
        table: MemberTable,
        cache: PolicyCache[str, bytes],
        *,
        seeds: Iterable[str] = (),
        token: str | None = None,
        interval_s: float = GOSSIP_INTERVAL_S,
        timeout_s: float = GOSSIP_TIMEOUT_S,
        leave_drain_s: float = LEAVE_DRAIN_S,
        rng: random.Random | None = None,
    ) -> None:
        if interval_s <= 0 or timeout_s <= 0 or leave_drain_s < 0:
            raise InvalidArgument("need a positive interval and timeout and a drain >= 0")
        self.table = table
        self.cache = cache
        self.seeds = [s for s in seeds if s != table.me.address]
        self._token = token
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._leave_drain_s = leave_drain_s
        self._random = rng if rng is not None else random.Random()
        self._stubs: dict[str, tuple[Any, Any]] = {}  # address -> (channel, stub)
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0
        self.purged = 0
        self.view_changes = 0

    # -- the view ---------------------------------------------------------------------------

    @property
    def view_id(self) -> int:
        return self.table.view().view_id

    def check_view(self, view_id: int) -> None:
        """Refuse a data call made under another view (0: the caller does not check)."""
        if self.table.me.status is Status.LEFT:
            raise StaleView(f"node {self.table.name} left the cluster; refresh the view")
        if view_id and view_id != self.view_id:
            raise StaleView(f"view {view_id:#x} is not this node's {self.view_id:#x}; refresh")

    def receive(self, records: list[Member]) -> None:
        """Merge records from a peer's gossip; purge when the view changed."""
        if self.table.merge(records):
            self._view_changed()

    def _view_changed(self) -> None:
        self.view_changes += 1
        view = self.table.view()
        keys = self.cache.snapshot_keys()
        if self.table.name not in view.names:
            dropped = keys  # not in the view: hold nothing
        else:
            ring = view.ring()  # built once: the purge walks every entry
            dropped = [k for k in keys if ring.owner(k) != self.table.name]
        for key in dropped:
            self.cache.delete(key)
        self.purged += len(dropped)
        logger.info("view %#x: %s; dropped %d entries", view.view_id, view.names, len(dropped))

    # -- gossip -----------------------------------------------------------------------------

    def _stub(self, address: str) -> Any:
        if address not in self._stubs:
            channel = connect_channel(address, token=self._token)
            self._stubs[address] = (channel, cache_pb2_grpc.CacheStub(channel))  # type: ignore[no-untyped-call]
        return self._stubs[address][1]

    async def _exchange(self, address: str) -> bool:
        message = to_proto(self.table.records(), self.view_id)
        try:
            reply = await self._stub(address).Gossip(message, timeout=self._timeout_s)
            self.receive(from_proto(reply))
            return True
        except Exception as error:  # a peer that does not answer is the detector's business
            logger.debug("gossip with %s failed: %s", address, error)
            return False

    async def round(self) -> None:
        """One round: tick, then exchange with a random live peer (and sometimes a seed)."""
        before = self.view_id
        self.table.tick()
        if self.view_id != before:
            self._view_changed()
        self.rounds += 1
        targets = []
        peers = self.table.peers()
        if peers:
            targets.append(self._random.choice(peers).address)
        if self.seeds and (not peers or self.rounds % SEED_EVERY_ROUNDS == 0):
            targets.append(self._random.choice(self.seeds))
        for address in dict.fromkeys(targets):
            await self._exchange(address)

    async def _run(self) -> None:
        while True:
            await self.round()
            await asyncio.sleep(self._interval_s)

    async def start(self) -> None:
        for seed in self.seeds:  # join: tell the seeds at once rather than at the first round
            await self._exchange(seed)
        self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def leave_drain_s(self) -> float:
        """How long ``leave`` answers ``StaleView`` after announcing the leave (>= 0)."""
        return self._leave_drain_s

    async def leave(self) -> None:
        """Depart on purpose: tell every peer, then answer ``StaleView`` for the drain time."""
        if self._task is None:
            return  # never joined (a start that failed half-way)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self.table.leave()
        addresses = {m.address for m in self.table.peers()} | set(self.seeds)
        await asyncio.gather(*(self._exchange(a) for a in addresses))
        await asyncio.sleep(self._leave_drain_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for channel, _ in self._stubs.values():
            await channel.close()
        self._stubs.clear()
