"""Versions for replicated values: dotted version vectors, siblings and contexts.

Theory of operation. Each write a replica coordinates gets a *dot* ``(node, counter)``: the
coordinator's next counter for that key, and above every counter it issued in an earlier life
(``counter_floor``, from ``dot_lease``), so no dot ever names two writes. A stored object is a set of *siblings* (each a value,
or ``None`` for a delete, tagged with its dot) plus a *context*: a version vector saying which
dots the object has seen, live or overwritten.

* A client reads ``(siblings, context)`` and writes back with that context. The new object
  keeps only the siblings whose dots the client had *not* seen, and adds the new value with a
  fresh dot. So a write that saw everything replaces everything; two writes that both started
  from the same read are concurrent and both survive as siblings, until a write whose
  context covers both resolves them.
* Two replicas' objects merge (``merge``) by keeping a sibling if both have it, or if the
  other side has not seen its dot. Merge is commutative, associative and idempotent, so
  replicas converge whatever order updates and repairs arrive in.

This is the "dotted version vector" scheme: unlike per-client vector clocks it does not grow
with the number of clients, and unlike plain per-server vector clocks it does not make two
concurrent writes through one coordinator look ordered (which would lose one of them).

Last-write-wins is an explicit option (``lww=True``): after every update or merge only the
sibling with the highest hybrid-logical-clock timestamp (dot as tie-break) is kept. It never
shows siblings and silently drops the losers of truly concurrent writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from blocks.core.codec import pack, unpack
from blocks.core.errors import InvalidArgument, PeerError
from blocks.kv.cluster.hlc import HlcTimestamp

__all__ = [
    "COUNTER_MAX",
    "EMPTY",
    "Dot",
    "Sibling",
    "VersionVector",
    "VersionedObject",
    "decode_context",
    "encode_context",
    "merge",
    "next_counter",
    "object_from_wire",
    "object_to_wire",
    "update",
]

CONTEXT_BYTES_MAX = 64 * 1024
COUNTER_MAX = (1 << 63) - 1
"""Largest dot counter: a signed 64-bit integer, what every wire form carries."""
NODES_PER_VECTOR_MAX = 1_024
"""Bound on a vector's entries: one per node that ever coordinated a write of the key."""


@dataclass(frozen=True, slots=True, order=True)
class Dot:
    """The ``counter``-th write of a key coordinated by ``node``."""

    node: str
    counter: int


@dataclass(frozen=True, slots=True)
class VersionVector:
    """``node -> highest counter seen``, as a sorted tuple so it hashes and compares."""

    entries: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, int]) -> VersionVector:
        return cls(tuple(sorted((n, c) for n, c in mapping.items() if c > 0)))

    def get(self, node: str) -> int:
        for name, counter in self.entries:
            if name == node:
                return counter
        return 0

    def covers(self, dot: Dot) -> bool:
        return dot.counter <= self.get(dot.node)

    def join(self, other: VersionVector) -> VersionVector:
        # Most joins on the write path have one side covering the other (a client's context
        # is the stored one; the new dot is above it): no dict, no sort.
        if other is self or not other.entries:
            return self
        if not self.entries:
            return other
        if len(self.entries) + len(other.entries) <= 8:  # descends is quadratic
            if self.descends(other):
                return self
            if other.descends(self):
                return other
        merged = dict(self.entries)
        for node, counter in other.entries:
            if counter > merged.get(node, 0):
                merged[node] = counter
        return VersionVector.from_mapping(merged)

    def descends(self, other: VersionVector) -> bool:
        """True when this vector has seen everything ``other`` has."""
        return all(self.get(node) >= counter for node, counter in other.entries)


@dataclass(frozen=True, slots=True)
class Sibling:
    dot: Dot
    value: bytes | None  # None: a delete
    timestamp: HlcTimestamp


@dataclass(frozen=True, slots=True)
class VersionedObject:
    """Siblings (sorted by dot, dots unique) and the causal context they were seen in.

    ``wire`` is ``object_to_wire``'s answer, kept once made: an object is immutable, and a put
    sends one object to its store, to each replica, to the client and to anti-entropy's digest.
    """

    siblings: tuple[Sibling, ...]
    context: VersionVector
    wire: tuple[Any, ...] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def values(self) -> list[bytes]:
        """The live values: every sibling that is not a delete."""
        return [s.value for s in self.siblings if s.value is not None]

    @property
    def value(self) -> bytes | None:
        """The single value when there is no conflict; the highest-timestamp one otherwise."""
        live = [s for s in self.siblings if s.value is not None]
        if not live:
            return None
        return max(live, key=lambda s: (s.timestamp, s.dot)).value


EMPTY = VersionedObject((), VersionVector())


def _normalise(siblings: Iterable[Sibling], context: VersionVector, lww: bool) -> VersionedObject:
    if type(siblings) is list and len(siblings) == 1:  # a write that saw everything: no sort
        return VersionedObject((siblings[0],), context)
    unique = {s.dot: s for s in siblings}
    ordered = tuple(sorted(unique.values(), key=lambda s: s.dot))
    if lww and len(ordered) > 1:
        ordered = (max(ordered, key=lambda s: (s.timestamp, s.dot)),)
    return VersionedObject(ordered, context)


def next_counter(
    stored: VersionedObject | None, client_context: VersionVector, node: str, counter_floor: int
) -> int:
    """The counter of the next dot ``node`` issues for a key: above every counter of ``node``
    its copy or the client has seen, and above ``counter_floor``, the highest counter the node
    may have issued in an earlier life (whose writes its copy may have lost to a power cut)."""
    base = stored or EMPTY
    return max(base.context.get(node), client_context.get(node), counter_floor) + 1


def update(
    stored: VersionedObject | None,
    client_context: VersionVector,
    node: str,
    value: bytes | None,
    timestamp: HlcTimestamp,
    *,
    lww: bool = False,
    counter_floor: int = 0,
) -> VersionedObject:
    """The object after ``node`` coordinates a write of ``value`` seen from ``client_context``;
    its dot's counter is ``next_counter(stored, client_context, node, counter_floor)``."""
    base = stored or EMPTY
    counter = next_counter(stored, client_context, node, counter_floor)
    dot = Dot(node, counter)
    kept = [s for s in base.siblings if not client_context.covers(s.dot)]
    context = base.context.join(client_context).join(VersionVector(((node, counter),)))
    return _normalise([*kept, Sibling(dot, value, timestamp)], context, lww)


def merge(
    left: VersionedObject | None, right: VersionedObject | None, *, lww: bool = False
) -> VersionedObject:
    """Combine two replicas' objects; commutative, associative and idempotent."""
    if left is None or right is None:
        only = left or right or EMPTY
        if len(only.siblings) <= 1:
            # Already normalised (one sibling is sorted, unique and its own LWW winner): the
            # object itself, with the wire form it may carry. A replica's first copy of a key
            # takes this path on every replicated put.
            return only
        return _normalise(only.siblings, only.context, lww)
    left_dots = {s.dot for s in left.siblings}
    right_dots = {s.dot for s in right.siblings}
    kept = [s for s in left.siblings if s.dot in right_dots or not right.context.covers(s.dot)]
    kept += [s for s in right.siblings if s.dot not in left_dots and not left.context.covers(s.dot)]
    return _normalise(kept, left.context.join(right.context), lww)


# -- wire forms -------------------------------------------------------------------------------


def encode_context(context: VersionVector) -> bytes:
    """The opaque context handed to clients."""
    return pack([[node, counter] for node, counter in context.entries])


def decode_context(data: bytes | None) -> VersionVector:
    """Parse a client's context; ``None`` or empty means "seen nothing"."""
    if not data:
        return VersionVector()
    try:
        return _vector_from_wire(unpack(data, size_max=CONTEXT_BYTES_MAX))
    except (InvalidArgument, PeerError) as error:
        raise InvalidArgument(f"malformed context: {error}") from None


def _vector_from_wire(raw: Any) -> VersionVector:
    if not isinstance(raw, list | tuple) or len(raw) > NODES_PER_VECTOR_MAX:
        raise PeerError("version vector must be a bounded list")
    mapping: dict[str, int] = {}
    for item in raw:
        if (
            not isinstance(item, list | tuple)
            or len(item) != 2
            or not isinstance(item[0], str)
            or type(item[1]) is not int
            or not 1 <= item[1] <= COUNTER_MAX
            or item[0] in mapping
        ):
            raise PeerError("version vector entries must be unique [node, 1 <= counter < 2**63]")
        mapping[item[0]] = item[1]
    return VersionVector.from_mapping(mapping)


def object_to_wire(obj: VersionedObject) -> tuple[Any, ...]:
    """``(siblings, context)``, packed as msgpack arrays: made once per object and shared.

    Tuples, not lists: a node keeps every stored object, so this form lives as long as the
    key; tuples of strings, ints and bytes leave the garbage collector's tracking after their
    first collection, where lists would be traversed by every full collection (about 5 per
    key, the largest share of a growing node's GC work)."""
    wire = obj.wire
    if wire is None:
        siblings = tuple(
            (s.dot.node, s.dot.counter, s.value, s.timestamp.wall_ms, s.timestamp.logical)
            for s in obj.siblings
        )
        wire = (siblings, obj.context.entries)
        object.__setattr__(obj, "wire", wire)
    return wire


def object_from_wire(raw: Any) -> VersionedObject:
    """Parse an object a peer sent; raises ``PeerError`` on anything malformed."""
    if not isinstance(raw, list | tuple) or len(raw) != 2 or not isinstance(raw[0], list | tuple):
        raise PeerError("object must be [siblings, context]")
    context = _vector_from_wire(raw[1])
    siblings = []
    for item in raw[0][:NODES_PER_VECTOR_MAX]:
        if (
            not isinstance(item, list | tuple)
            or len(item) != 5
            or not isinstance(item[0], str)
            or not (type(item[1]) is int and item[1] >= 0)
            or not (type(item[3]) is int and item[3] >= 0)
            or not (type(item[4]) is int and item[4] >= 0)
            or not (item[2] is None or isinstance(item[2], bytes))
        ):
            raise PeerError("malformed sibling")
        node, counter, value, wall_ms, logical = item
        siblings.append(Sibling(Dot(node, counter), value, HlcTimestamp(wall_ms, logical)))
    if len(siblings) != len(raw[0]) or not all(context.covers(s.dot) for s in siblings):
        raise PeerError("siblings must be bounded and covered by the context")
    return _normalise(siblings, context, lww=False)
