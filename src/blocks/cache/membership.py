"""Cache cluster membership: who is in the cluster, agreed by gossip (pure, no I/O).

Theory of operation
-------------------
Every node keeps a ``MemberTable``: one ``Member`` record per node it has heard of, with the
node's address, an *incarnation*, a *status* (``ALIVE``, ``DEAD`` or ``LEFT``) and a
*heartbeat* the node bumps on every gossip round. Nodes exchange their whole tables (push and
pull); ``merge`` keeps, per node, the record that *supersedes* the other: the higher
incarnation, then the graver status (``LEFT`` > ``DEAD`` > ``ALIVE``), then the higher
heartbeat. That order is a total order on records, so merging is commutative, associative
and idempotent: tables that have exchanged the same records hold the same records, whatever
the order of the exchanges (tests/cache/test_cache_membership.py checks it).

Failure detection: a node whose heartbeat this node has not seen rise for ``dead_after_ms``
(on the injected clock) is marked ``DEAD`` at its incarnation. A node that learns it is
declared dead while it is running *refutes* it: it takes an incarnation above the one in the
rumour, which supersedes it. A restarted node starts at an incarnation taken from the clock
(milliseconds), above anything its previous life announced. A node that leaves on purpose
marks itself ``LEFT``. Records of dead and departed nodes, learned like any other (so the
order of the news does not matter), are forgotten after ``forget_after_ms``, long enough for
the news to reach everyone first; a record that arrives after that from a peer that lagged
behind makes the node reappear until the detector declares it dead again.

The *view* is what placement uses: the sorted ``(name, address)`` pairs of the ``ALIVE``
members, and its ``view_id``, a 64-bit hash of them. Two nodes (or a node and a client) with
the same ``view_id`` place every key on the same nodes. A node answers a request made under
another view with ``StaleView`` (the client refreshes), and when its view changes it drops
the entries of keys it does not own (``keeps``), so a key that moves away and back cannot return
an entry older than the move (docs/cache.md, "Cluster membership").

Bounds: at most ``MEMBERS_MAX`` records (more is ``InvalidArgument`` and nothing merged);
names and addresses at most ``NAME_BYTES_MAX`` bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import IntEnum

from blocks.core.clock import Clock
from blocks.core.errors import FailedPrecondition, InvalidArgument
from blocks.core.hashing import HashRing, key_hash

__all__ = [
    "DEAD_AFTER_MS",
    "FORGET_AFTER_MS",
    "MEMBERS_MAX",
    "Member",
    "MemberTable",
    "StaleView",
    "Status",
    "View",
    "supersedes",
]

DEAD_AFTER_MS = 3_000
FORGET_AFTER_MS = 60_000
MEMBERS_MAX = 1_024
NAME_BYTES_MAX = 256


class Status(IntEnum):
    """Graver statuses supersede milder ones at the same incarnation."""

    ALIVE = 0
    DEAD = 1
    LEFT = 2


class StaleView(FailedPrecondition):
    """A request was made under another membership view; refresh it and try again."""


@dataclass(frozen=True, slots=True)
class Member:
    """One node's record. ``data_address`` is where it serves the framed-TCP data path
    (``blocks.cache.datapath``), fixed for one incarnation; empty when it serves gRPC only.
    It is not part of the view: placement depends on names and addresses alone."""

    name: str
    address: str
    incarnation: int
    status: Status
    heartbeat: int
    data_address: str = ""

    def rank(self) -> tuple[int, int, int]:
        return (self.incarnation, int(self.status), self.heartbeat)


def supersedes(new: Member, old: Member) -> bool:
    """Whether ``new`` replaces ``old`` (records of one node)."""
    return new.rank() > old.rank()


@dataclass(frozen=True, slots=True)
class View:
    """The live members a placement is built from; equal ``view_id`` means equal placement."""

    members: tuple[tuple[str, str], ...]
    view_id: int

    @classmethod
    def of(cls, members: Iterable[tuple[str, str]]) -> View:
        ordered = tuple(sorted(members))
        text = "\n".join(f"{name} {address}" for name, address in ordered)
        return cls(ordered, key_hash(text.encode()) or 1)  # 0 means "no view" on the wire

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.members]

    def ring(self) -> HashRing:
        return HashRing(self.names)

    def holders(self, key: str, replicas: int) -> list[str]:
        """The nodes that may hold ``key``: its owner, then ``replicas - 1`` more."""
        if not self.members:
            return []
        ring = self.ring()
        return ring.preference_list(key, min(replicas, len(ring)))


def _check_member(member: Member) -> None:
    for text in (member.name, member.address):
        if not isinstance(text, str) or not text or len(text.encode()) > NAME_BYTES_MAX:
            raise InvalidArgument(f"member names and addresses are 1..{NAME_BYTES_MAX} bytes")
    data_address = member.data_address
    if not isinstance(data_address, str) or len(data_address.encode()) > NAME_BYTES_MAX:
        raise InvalidArgument(f"data addresses are 0..{NAME_BYTES_MAX} bytes")
    if member.incarnation < 0 or member.heartbeat < 0:
        raise InvalidArgument("incarnation and heartbeat are >= 0")


class MemberTable:
    """One node's membership table; see the module docstring. Not thread-safe."""

    def __init__(
        self,
        name: str,
        address: str,
        clock: Clock,
        *,
        dead_after_ms: int = DEAD_AFTER_MS,
        forget_after_ms: int = FORGET_AFTER_MS,
        data_address: str = "",
    ) -> None:
        if dead_after_ms <= 0 or forget_after_ms <= dead_after_ms:
            raise InvalidArgument("need 0 < dead_after_ms < forget_after_ms")
        self.name = name
        self._clock = clock
        self.dead_after_ms = dead_after_ms
        self.forget_after_ms = forget_after_ms
        me = Member(name, address, max(1, clock.now_ms()), Status.ALIVE, 0, data_address)
        _check_member(me)
        self._members: dict[str, Member] = {name: me}
        self._view: View | None = None  # of _members; None after any change to them
        self._heard_ms: dict[str, int] = {name: clock.now_ms()}
        self.refutations = 0

    @property
    def me(self) -> Member:
        return self._members[self.name]

    def serve_data_at(self, data_address: str) -> None:
        """Announce where this node serves its data path (once it is bound, before it gossips:
        peers take the first record of an incarnation they hear)."""
        me = replace(self.me, data_address=data_address)
        _check_member(me)
        self._members[self.name] = me
        self._view = None

    def records(self) -> list[Member]:
        return list(self._members.values())

    def member(self, name: str) -> Member | None:
        return self._members.get(name)

    def view(self) -> View:
        """The view of the alive members (kept until the records change: every data call
        checks it)."""
        if self._view is None:
            self._view = View.of(
                (m.name, m.address) for m in self._members.values() if m.status is Status.ALIVE
            )
        return self._view

    def peers(self) -> list[Member]:
        """Other members worth gossiping with (alive as far as this node knows)."""
        return [
            m for m in self._members.values() if m.name != self.name and m.status is Status.ALIVE
        ]

    def tick(self) -> None:
        """One gossip round: bump the own heartbeat, declare silent members dead, forget
        long-gone ones."""
        now = self._clock.now_ms()
        me = self.me
        self._members[self.name] = replace(me, heartbeat=me.heartbeat + 1)
        self._view = None
        self._heard_ms[self.name] = now
        for name, member in list(self._members.items()):
            if name == self.name:
                continue
            silent_ms = now - self._heard_ms.get(name, now)
            if member.status is Status.ALIVE and silent_ms > self.dead_after_ms:
                self._members[name] = replace(member, status=Status.DEAD)
                self._view = None
                self._heard_ms[name] = now
            elif member.status is not Status.ALIVE and silent_ms > self.forget_after_ms:
                del self._members[name]
                self._view = None
                del self._heard_ms[name]

    def merge(self, records: Iterable[Member]) -> bool:
        """Adopt every record that supersedes ours; True when the view changed."""
        incoming = list(records)
        if len(incoming) > MEMBERS_MAX:
            raise InvalidArgument(f"more than {MEMBERS_MAX} member records")
        for record in incoming:
            _check_member(record)
        before = self.view().view_id
        for record in incoming:
            if record.name == self.name:
                self._refute(record)
                continue
            known = self._members.get(record.name)
            if known is None:
                if len(self._members) >= MEMBERS_MAX:
                    continue  # full: the record comes again with the next gossip
            elif not supersedes(record, known):
                continue
            self._members[record.name] = record
            self._view = None
            self._heard_ms[record.name] = self._clock.now_ms()
        return self.view().view_id != before

    def _refute(self, rumour: Member) -> None:
        me = self.me
        if me.status is Status.LEFT:
            return  # leaving is final for this life
        if rumour.status is not Status.ALIVE and rumour.incarnation >= me.incarnation:
            self._members[self.name] = replace(
                me, incarnation=rumour.incarnation + 1, heartbeat=me.heartbeat + 1
            )
            self._view = None
            self.refutations += 1

    def leave(self) -> None:
        """Mark this node as gone on purpose; gossip it before stopping."""
        me = self.me
        self._members[self.name] = replace(me, status=Status.LEFT, heartbeat=me.heartbeat + 1)
        self._view = None

    def keeps(self, key: str) -> bool:
        """Whether this node owns ``key`` in the current view (what it keeps on a change)."""
        view = self.view()
        return bool(view.members) and view.ring().owner(key) == self.name
