"""Cluster membership by gossip, with a heartbeat failure detector; a core without I/O.

Theory of operation. Every node keeps a table of ``MemberRecord``: node id, the address
clients and peers reach it at, a *generation* (chosen when the node starts, so a restarted
node supersedes its previous life), a *heartbeat* counter and a status (``ALIVE`` or
``LEFT``). Two questions are kept apart, as in Dynamo:

* **Who is in the ring** is explicit: a node is in the ring from the moment anyone's table
  holds it as ``ALIVE`` (seed peers start that way) until a ``LEFT`` record for it spreads.
  A crashed node stays in the ring; sloppy quorum and hinted handoff cover its absence.
* **Who is healthy right now** is a local opinion: a peer is healthy while its heartbeat has
  advanced within ``suspect_after_s`` of local time. Nothing about it is gossiped.

``tick`` bumps this node's own heartbeat and returns a ``Ready`` (``blocks.core.ready``)
whose ``messages`` carry the full table to ``fanout`` peers picked with the injected
``random.Random`` (nothing to persist: the table is rebuilt by gossip after a restart); the
receiver merges (``handle_gossip``, whose ``Ready`` carries its own table back to the sender
when asked, and as its one reply whether the ring changed), so news spreads in O(log n)
rounds (push-pull).
Merging keeps, per node, the record with the larger ``(generation, heartbeat, left)``; a
record about ourselves from someone else is never adopted: if it claims more than we know
(an old ``LEFT`` or a higher heartbeat from a previous life), we jump our heartbeat past it,
which keeps us in the ring.

Bounds: at most ``members_max`` records (records for unknown nodes past it are dropped and
counted). ``LEFT`` records are kept as tombstones so a departed node does not come back
through stale gossip; a node rejoins by starting with a newer generation.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from blocks.core.clock import Clock
from blocks.core.errors import InvalidArgument, PeerError
from blocks.core.ready import Ready

__all__ = [
    "GossipReady",
    "MemberRecord",
    "MemberStatus",
    "Membership",
    "MembershipConfig",
    "MembershipReady",
    "record_from_wire",
    "record_to_wire",
]

NODE_ID_CHARS_MAX = 256
ADDRESS_CHARS_MAX = 512


class MemberStatus(enum.Enum):
    ALIVE = "alive"
    LEFT = "left"


@dataclass(frozen=True, slots=True)
class MemberRecord:
    node_id: str
    address: str  # "host:port" of the node's data path; "" on an in-memory network
    generation: int  # >= 0; a restart picks a larger one
    heartbeat: int  # >= 0; only its owner increases it (or an operator's remove)
    status: MemberStatus = MemberStatus.ALIVE

    def __post_init__(self) -> None:
        if not self.node_id or len(self.node_id) > NODE_ID_CHARS_MAX:
            raise InvalidArgument(f"node id must be 1..{NODE_ID_CHARS_MAX} characters")
        if len(self.address) > ADDRESS_CHARS_MAX:
            raise InvalidArgument("address too long")
        if self.generation < 0 or self.heartbeat < 0:
            raise InvalidArgument("generation and heartbeat must be >= 0")

    @property
    def rank(self) -> tuple[int, int, bool]:
        """Which of two records about one node wins: the larger rank."""
        return (self.generation, self.heartbeat, self.status is MemberStatus.LEFT)


MembershipReady = Ready[tuple[MemberRecord, ...], None, None]
"""What ``tick`` gives the driver: ``(peer, table)`` messages, nothing else."""

GossipReady = Ready[tuple[MemberRecord, ...], bool, None]
"""What ``handle_gossip`` gives the driver: the ``(sender, table)`` answer when one was
asked for, and one reply: whether the ring's members changed."""


@dataclass(frozen=True, slots=True)
class MembershipConfig:
    fanout: int = 2
    suspect_after_s: float = 1.0
    members_max: int = 1_024

    def __post_init__(self) -> None:
        if self.fanout < 1 or self.members_max < 1:
            raise InvalidArgument("fanout and members_max must be >= 1")
        if self.suspect_after_s <= 0:
            raise InvalidArgument("suspect_after_s must be > 0")


class Membership:
    """One node's view of the cluster; drive it from one loop (not thread-safe)."""

    def __init__(
        self,
        node_id: str,
        *,
        clock: Clock,
        rng: random.Random,
        address: str = "",
        generation: int = 0,
        seeds: Mapping[str, str] | None = None,
        config: MembershipConfig | None = None,
    ) -> None:
        self.node_id = node_id
        self.config = config or MembershipConfig()
        self._clock = clock
        self._rng = rng
        self.records: dict[str, MemberRecord] = {
            node_id: MemberRecord(node_id, address, generation, 0)
        }
        for peer, peer_address in (seeds or {}).items():
            if peer != node_id:
                self._add(MemberRecord(peer, peer_address, 0, 0))
        self._last_heard: dict[str, float] = {}
        self.dropped_records = 0
        self.ring_version = 0

    @property
    def me(self) -> MemberRecord:
        return self.records[self.node_id]

    # -- queries -------------------------------------------------------------------------------

    def ring_members(self) -> list[str]:
        """The nodes that own key ranges: every node not known to have left, sorted."""
        return sorted(n for n, r in self.records.items() if r.status is MemberStatus.ALIVE)

    def healthy(self) -> set[str]:
        """Ring members heard from within ``suspect_after_s``, and this node while in the ring."""
        me, alive = self.node_id, MemberStatus.ALIVE
        if len(self.records) == 1 and me in self.records:  # alone: no clock, no scan
            return {me} if self.records[me].status is alive else set()
        cutoff = self._clock.monotonic() - self.config.suspect_after_s
        heard = self._last_heard
        return {
            n
            for n, r in self.records.items()
            if r.status is alive and (n == me or heard.get(n, -1e300) >= cutoff)
        }

    def addresses(self) -> dict[str, str]:
        return {n: r.address for n, r in self.records.items() if r.status is MemberStatus.ALIVE}

    # -- commands ------------------------------------------------------------------------------

    def tick(self) -> MembershipReady:
        """Bump our heartbeat; ``(peer, table)`` messages for up to ``fanout`` random peers."""
        me = self.me
        self.records[self.node_id] = replace(me, heartbeat=me.heartbeat + 1)
        peers = sorted(n for n in self.ring_members() if n != self.node_id)
        chosen = self._rng.sample(peers, min(self.config.fanout, len(peers)))
        table = self.table()
        return Ready([(peer, table) for peer in chosen])

    def table(self) -> tuple[MemberRecord, ...]:
        return tuple(self.records[n] for n in sorted(self.records))

    def leave(self) -> None:
        """Announce that this node leaves the ring (spread by the following ticks)."""
        me = self.me
        self._set(replace(me, heartbeat=me.heartbeat + 1, status=MemberStatus.LEFT))

    def remove(self, node_id: str) -> None:
        """Operator action: declare a (dead) node gone, so its ranges move to others."""
        record = self.records.get(node_id)
        if record is None:
            raise InvalidArgument(f"unknown node {node_id!r}")
        if node_id == self.node_id:
            self.leave()
            return
        self._set(replace(record, heartbeat=record.heartbeat + 1, status=MemberStatus.LEFT))

    def handle_gossip(
        self, sender: str, records: Iterable[MemberRecord], *, reply_wanted: bool = False
    ) -> GossipReady:
        """Merge a peer's table; with ``reply_wanted``, answer with this node's table (then
        merged). The one reply says whether the ring's members changed."""
        before = self.ring_members()
        for record in records:
            if record.node_id == self.node_id:
                self._defend(record)
                continue
            known = self.records.get(record.node_id)
            if known is None:
                self._add(record)
            elif record.rank > known.rank:
                self.records[record.node_id] = record
            else:
                continue
            if record.status is MemberStatus.ALIVE and record.rank > (0, 0, False):
                self._last_heard[record.node_id] = self._clock.monotonic()
        if sender in self.records and self.records[sender].status is MemberStatus.ALIVE:
            self._last_heard[sender] = self._clock.monotonic()
        changed = self.ring_members() != before
        if changed:
            self.ring_version += 1
        messages = [(sender, self.table())] if reply_wanted else []
        return Ready(messages, replies=(changed,))

    # -- internals -----------------------------------------------------------------------------

    def _defend(self, claim: MemberRecord) -> None:
        me = self.me
        if claim.generation == me.generation and claim.rank > me.rank:
            if me.status is MemberStatus.LEFT:
                return  # we are leaving anyway
            self.records[self.node_id] = replace(me, heartbeat=claim.heartbeat + 1)

    def _add(self, record: MemberRecord) -> None:
        if len(self.records) >= self.config.members_max:
            self.dropped_records += 1
            return
        self.records[record.node_id] = record

    def _set(self, record: MemberRecord) -> None:
        before = self.ring_members()
        self.records[record.node_id] = record
        if self.ring_members() != before:
            self.ring_version += 1


# -- wire form ---------------------------------------------------------------------------------


def record_to_wire(record: MemberRecord) -> list[Any]:
    return [
        record.node_id,
        record.address,
        record.generation,
        record.heartbeat,
        record.status is MemberStatus.LEFT,
    ]


def record_from_wire(raw: Any) -> MemberRecord:
    """Parse a record a peer sent; ``PeerError`` on anything malformed."""
    if (
        not isinstance(raw, list)
        or len(raw) != 5
        or not isinstance(raw[0], str)
        or not isinstance(raw[1], str)
        or type(raw[2]) is not int
        or type(raw[3]) is not int
        or not isinstance(raw[4], bool)
    ):
        raise PeerError("member record must be [node, address, generation, heartbeat, left]")
    status = MemberStatus.LEFT if raw[4] else MemberStatus.ALIVE
    try:
        return MemberRecord(raw[0], raw[1], raw[2], raw[3], status)
    except InvalidArgument as error:
        raise PeerError(f"malformed member record: {error}") from None
