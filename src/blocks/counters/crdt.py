"""State-based counter CRDTs: G-Counter and PN-Counter.

Theory of operation
-------------------
A G-Counter is a map from replica name to the number of increments *that replica* made. A
replica only ever raises its own entry, so the entries of two copies of the same counter can
differ only by one being older: ``merge`` takes the pointwise maximum, and the value is the
sum of entries. Pointwise maximum is commutative, associative and idempotent, which is what
lets replicas exchange whole states over a network that loses, repeats and reorders messages
and still converge: a state received twice, late or out of order is absorbed harmlessly.

A PN-Counter is two G-Counters, one for increments and one for decrements; its value is the
difference. Both types here are immutable values: every operation returns a new counter, so
they can be shared, hashed into messages and compared without aliasing surprises.

Bounds: replica names are non-empty strings of at most ``REPLICA_NAME_BYTES_MAX`` bytes, a
counter holds at most ``REPLICAS_MAX`` entries, and entries fit in 63 bits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from blocks.core.errors import InvalidArgument, PeerError

__all__ = ["ENTRY_MAX", "REPLICAS_MAX", "GCounter", "PNCounter"]

REPLICAS_MAX = 4096
REPLICA_NAME_BYTES_MAX = 256
ENTRY_MAX = (1 << 63) - 1


def _check_replica(replica: str) -> None:
    if not isinstance(replica, str) or not replica:
        raise InvalidArgument(f"replica name must be a non-empty str, got {replica!r}")
    if len(replica.encode()) > REPLICA_NAME_BYTES_MAX:
        raise InvalidArgument(f"replica name longer than {REPLICA_NAME_BYTES_MAX} bytes")


def _check_amount(amount: int) -> None:
    if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
        raise InvalidArgument(f"amount must be a non-negative int, got {amount!r}")


@dataclass(frozen=True, slots=True)
class GCounter:
    """A grow-only counter. ``counts`` maps replica name to that replica's total."""

    counts: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.counts) > REPLICAS_MAX:
            raise InvalidArgument(f"a counter holds at most {REPLICAS_MAX} replicas")
        object.__setattr__(self, "counts", {k: v for k, v in self.counts.items() if v})

    @property
    def value(self) -> int:
        return sum(self.counts.values())

    def increment(self, replica: str, amount: int = 1) -> GCounter:
        """A copy with ``replica``'s entry raised by ``amount`` (>= 0)."""
        _check_replica(replica)
        _check_amount(amount)
        total = self.counts.get(replica, 0) + amount
        if total > ENTRY_MAX:
            raise InvalidArgument("counter entry would overflow 63 bits")
        return GCounter({**self.counts, replica: total})

    def merge(self, other: GCounter) -> GCounter:
        """The pointwise maximum: the least counter that has seen both."""
        merged = dict(self.counts)
        for replica, count in other.counts.items():
            if count > merged.get(replica, 0):
                merged[replica] = count
        return GCounter(merged)

    def __le__(self, other: GCounter) -> bool:
        """True when ``other`` has seen everything ``self`` has (the CRDT partial order)."""
        return all(other.counts.get(k, 0) >= v for k, v in self.counts.items())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GCounter) and dict(self.counts) == dict(other.counts)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.counts.items())))

    def to_wire(self) -> dict[str, int]:
        return dict(self.counts)

    @classmethod
    def from_wire(cls, wire: Any) -> GCounter:
        """Decode a peer's ``to_wire()``; ``PeerError`` for anything malformed."""
        if not isinstance(wire, dict) or len(wire) > REPLICAS_MAX:
            raise PeerError("G-Counter state must be a map of at most REPLICAS_MAX entries")
        for replica, count in wire.items():
            if not isinstance(replica, str) or not replica or len(replica) > REPLICA_NAME_BYTES_MAX:
                raise PeerError(f"bad replica name in counter state: {replica!r}")
            if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= ENTRY_MAX:
                raise PeerError(f"bad count in counter state: {count!r}")
        return cls(dict(wire))


@dataclass(frozen=True, slots=True)
class PNCounter:
    """A counter that goes up and down: increments ``p`` minus decrements ``n``."""

    p: GCounter = field(default_factory=GCounter)
    n: GCounter = field(default_factory=GCounter)

    @property
    def value(self) -> int:
        return self.p.value - self.n.value

    def increment(self, replica: str, amount: int = 1) -> PNCounter:
        """Add ``amount`` (any int; negative amounts decrement)."""
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise InvalidArgument(f"amount must be an int, got {amount!r}")
        if amount >= 0:
            return PNCounter(self.p.increment(replica, amount), self.n)
        return PNCounter(self.p, self.n.increment(replica, -amount))

    def decrement(self, replica: str, amount: int = 1) -> PNCounter:
        _check_amount(amount)
        return self.increment(replica, -amount)

    def merge(self, other: PNCounter) -> PNCounter:
        return PNCounter(self.p.merge(other.p), self.n.merge(other.n))

    def __le__(self, other: PNCounter) -> bool:
        return self.p <= other.p and self.n <= other.n

    def to_wire(self) -> list[dict[str, int]]:
        return [self.p.to_wire(), self.n.to_wire()]

    @classmethod
    def from_wire(cls, wire: Any) -> PNCounter:
        if not isinstance(wire, list) or len(wire) != 2:
            raise PeerError("PN-Counter state must be a list of two G-Counter states")
        return cls(GCounter.from_wire(wire[0]), GCounter.from_wire(wire[1]))
