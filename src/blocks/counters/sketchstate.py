"""Replicated sketches: distinct counts (HyperLogLog) and heavy hitters (Count-Min + top-k).

Theory of operation
-------------------
Both are state-based CRDTs, so gossip may lose, repeat and reorder pushes:

* **Distinct counts**: one ``HyperLogLog`` per name on every node; merge is the register-wise
  maximum, which is commutative, associative and idempotent. Every node's sketch converges to
  the sketch of the union of all nodes' items.
* **Heavy hitters**: adding Count-Min tables cell by cell is *not* idempotent: a push merged
  twice would count its items twice. So each name holds a map ``node -> (its own sketch, its
  top-k candidates)``; a node adds only to its own sketch, and merge keeps, per node, the
  entry with the larger ``total`` (a node's sketch only grows, so its total is a version).
  A query sums the nodes' latest sketches (cell-wise, once each) and ranks the union of their
  candidates by the summed estimate: top-k is recomputed, never merged.

The class is pure: ``tick()`` picks what to push (names changed since the last tick first,
then a round-robin cursor over all names, so a lost push is repeated on a later round) up to
``PUSH_SKETCHES_MAX`` names and ``PUSH_BYTES_MAX`` bytes, and ``handle_message`` merges a
peer's push; both return a ``GossipReady`` (``(peer, message)`` pairs) and do no I/O. ``snapshot``/``restore`` give
the whole state as msgpack-ready data for ``blocks.counters.durable``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from blocks.core.errors import InvalidArgument, Overloaded, PeerError
from blocks.core.ready import NOTHING, Ready
from blocks.counters.countmin import CountMinSketch, TopK
from blocks.counters.gossip import GossipReady
from blocks.counters.hyperloglog import HyperLogLog
from blocks.counters.local import check_name
from blocks.counters.sketchwire import countmin_from_wire, countmin_to_wire

__all__ = [
    "PUSH_SKETCHES_MAX",
    "SKETCHES",
    "SKETCHES_MAX",
    "SketchReplica",
]

SKETCHES = "sketches"
"""Gossip message kind of a sketch push."""
SKETCHES_MAX = 1000
"""Names of each kind (distinct, frequent) one node holds."""
NODES_PER_SKETCH_MAX = 64
PUSH_SKETCHES_MAX = 8
PUSH_BYTES_MAX = 4 * 1024 * 1024
ITEM_BYTES_MAX = 1024


@dataclass(slots=True)
class NodeSketch:
    """One node's Count-Min sketch of a name and the items it ranks highest."""

    sketch: CountMinSketch
    candidates: tuple[bytes, ...]


class SketchReplica:
    """One node's copy of every distinct-count and heavy-hitter sketch."""

    def __init__(
        self,
        node: str,
        peers: list[str],
        *,
        rng: random.Random,
        hll_precision: int = 14,
        top_k: int = 100,
        fanout: int = 2,
        cms_width: int = 2048,
        cms_depth: int = 5,
    ) -> None:
        self.node = node
        self._peers = sorted(set(peers) - {node})
        self._rng = rng
        self._precision = hll_precision
        self._top_k = top_k
        self._fanout = fanout
        self._cms_shape = (cms_width, cms_depth)
        self.distinct: dict[str, HyperLogLog] = {}
        self._own: dict[str, TopK] = {}  # this node's heavy-hitter trackers
        self._others: dict[str, dict[str, NodeSketch]] = {}  # name -> peer node -> latest
        self._merged: dict[str, CountMinSketch] = {}  # cache of the summed sketch
        self._dirty: dict[tuple[str, str], None] = {}  # (kind, name), insertion-ordered
        self._cursor = 0

    # -- local operations ---------------------------------------------------------------------

    def add_distinct(self, name: str, items: list[bytes]) -> int:
        sketch = self.distinct.get(name)
        if sketch is None:
            check_name(name)
            if len(self.distinct) >= SKETCHES_MAX:
                raise Overloaded(f"at most {SKETCHES_MAX} distinct-count sketches")
            sketch = self.distinct[name] = HyperLogLog(self._precision)
        sketch.add_many(items)
        self._dirty[("distinct", name)] = None
        return sketch.count()

    def count_distinct(self, name: str) -> int:
        sketch = self.distinct.get(name)
        return sketch.count() if sketch is not None else 0

    def add_frequent(self, name: str, items: list[bytes]) -> int:
        tracker = self._own.get(name)
        if tracker is None:
            check_name(name)
            if len(self.frequent_names()) >= SKETCHES_MAX and name not in self._others:
                raise Overloaded(f"at most {SKETCHES_MAX} heavy-hitter sketches")
            tracker = self._own[name] = TopK(self._top_k, CountMinSketch(*self._cms_shape))
        for item in items:
            tracker.add(item)
        self._merged.pop(name, None)
        self._dirty[("frequent", name)] = None
        return self._summed(name).total

    def frequent_names(self) -> set[str]:
        return set(self._own) | set(self._others)

    def _summed(self, name: str) -> CountMinSketch:
        merged = self._merged.get(name)
        if merged is None:
            own = self._own.get(name)
            parts = [own.sketch] if own is not None else []
            parts += [entry.sketch for entry in self._others.get(name, {}).values()]
            merged = parts[0].copy() if parts else CountMinSketch(*self._cms_shape)
            for part in parts[1:]:
                merged.merge(part)
            self._merged[name] = merged
        return merged

    def top(self, name: str, n: int) -> list[tuple[bytes, int]]:
        """Up to ``n`` items with the largest summed estimates over every node's sketch."""
        if name not in self._own and name not in self._others:
            return []
        summed = self._summed(name)
        candidates: set[bytes] = set(self._own_candidates(name))
        for entry in self._others.get(name, {}).values():
            candidates.update(entry.candidates)
        ranked = sorted(((item, summed.estimate(item)) for item in candidates),
                        key=lambda pair: (-pair[1], pair[0]))  # fmt: skip
        return ranked[: max(0, min(n, self._top_k))]

    def _own_candidates(self, name: str) -> tuple[bytes, ...]:
        tracker = self._own.get(name)
        if tracker is None:
            return ()
        return tuple(
            item if isinstance(item, bytes) else item.encode() for item, _ in tracker.top()
        )

    # -- wire form ----------------------------------------------------------------------------

    def _frequent_wire(self, name: str) -> dict[str, Any]:
        nodes: dict[str, Any] = {
            node: [countmin_to_wire(entry.sketch), list(entry.candidates)]
            for node, entry in self._others.get(name, {}).items()
        }
        own = self._own.get(name)
        if own is not None:
            nodes[self.node] = [countmin_to_wire(own.sketch), list(self._own_candidates(name))]
        return nodes

    def _entry_wire(self, kind: str, name: str) -> Any:
        if kind == "distinct":
            return self.distinct[name].to_bytes()
        return self._frequent_wire(name)

    def snapshot(self) -> dict[str, Any]:
        """Everything this node knows, as msgpack-ready data (see ``restore``)."""
        return {
            "distinct": {name: sketch.to_bytes() for name, sketch in self.distinct.items()},
            "frequent": {name: self._frequent_wire(name) for name in self.frequent_names()},
        }

    def restore(self, state: Any) -> None:
        """Merge a ``snapshot()`` in (the node's own entries included); ``PeerError`` if bad."""
        self._merge(state, from_self=True)

    # -- gossip -------------------------------------------------------------------------------

    def tick(self) -> GossipReady:
        """Push changed names first, then the next names of a round-robin over all of them."""
        if not self._peers:
            self._dirty.clear()
            return NOTHING
        chosen = list(self._dirty)[:PUSH_SKETCHES_MAX]
        for key in chosen:
            del self._dirty[key]
        every = [("distinct", n) for n in sorted(self.distinct)]
        every += [("frequent", n) for n in sorted(self.frequent_names())]
        for _ in range(min(len(every), PUSH_SKETCHES_MAX - len(chosen))):
            self._cursor %= len(every)
            key = every[self._cursor]
            self._cursor += 1
            if key not in chosen:
                chosen.append(key)
        if not chosen:
            return NOTHING
        message: dict[str, Any] = {"kind": SKETCHES, "distinct": {}, "frequent": {}}
        size = 0
        for kind, name in chosen:
            wire = self._entry_wire(kind, name)
            size += _wire_bytes(wire)
            if size > PUSH_BYTES_MAX and (message["distinct"] or message["frequent"]):
                self._dirty[(kind, name)] = None  # next tick
                continue
            message[kind][name] = wire
        targets = self._rng.sample(self._peers, min(self._fanout, len(self._peers)))
        return Ready([(peer, message) for peer in targets])

    def handle_message(self, source: str, message: Any) -> GossipReady:
        if not isinstance(message, dict) or message.get("kind") != SKETCHES:
            raise PeerError("not a sketch push")
        self._merge(message, from_self=False)
        return NOTHING

    def _merge(self, state: Any, *, from_self: bool) -> None:
        if not isinstance(state, dict):
            raise PeerError("sketch state must be a map")
        distinct, frequent = state.get("distinct", {}), state.get("frequent", {})
        if not isinstance(distinct, dict) or not isinstance(frequent, dict):
            raise PeerError("sketch state holds bad distinct or frequent maps")
        for name, data in distinct.items():
            self._merge_distinct(_peer_name(name), data)
        for name, nodes in frequent.items():
            if not isinstance(nodes, dict) or len(nodes) > NODES_PER_SKETCH_MAX:
                raise PeerError("a heavy-hitter entry must map at most 64 nodes")
            for node, wire in nodes.items():
                self._merge_frequent(_peer_name(name), node, wire, from_self)

    def _merge_distinct(self, name: str, data: Any) -> None:
        current = self.distinct.get(name)
        if current is not None and data == current.to_bytes():
            return  # the common case of a repeated push: nothing to do, cheaply
        try:
            incoming = HyperLogLog.from_bytes(data)
        except InvalidArgument as error:
            raise PeerError(f"bad HyperLogLog for {name!r}: {error}") from None
        if current is None:
            if len(self.distinct) >= SKETCHES_MAX:
                raise PeerError(f"peer sent more than {SKETCHES_MAX} distinct sketches")
            if incoming.precision != self._precision:
                raise PeerError("peer's HyperLogLog precision differs from ours")
            self.distinct[name] = incoming
            self._dirty[("distinct", name)] = None
            return
        try:
            before = current.to_bytes()
            current.merge(incoming)
        except InvalidArgument as error:
            raise PeerError(f"HyperLogLog for {name!r} does not merge: {error}") from None
        if current.to_bytes() != before:
            self._dirty[("distinct", name)] = None

    def _merge_frequent(self, name: str, node: Any, wire: Any, from_self: bool) -> None:
        if not isinstance(node, str) or not node or not isinstance(wire, list) or len(wire) != 2:
            raise PeerError("a heavy-hitter node entry is node -> [sketch, candidates]")
        if _wire_total(wire[0]) <= self._known_total(name, node):
            return  # not newer than what we hold: skip decoding it
        sketch = countmin_from_wire(wire[0])
        candidates = wire[1]
        if (
            not isinstance(candidates, list)
            or len(candidates) > self._top_k
            or not all(isinstance(c, bytes) and len(c) <= ITEM_BYTES_MAX for c in candidates)
        ):
            raise PeerError("heavy-hitter candidates must be at most k items of bytes")
        if node == self.node:
            self._adopt_own(name, sketch, candidates, from_self)
            return
        entries = self._others.get(name)
        if entries is None:
            if name not in self._own and len(self.frequent_names()) >= SKETCHES_MAX:
                raise PeerError(f"peer sent more than {SKETCHES_MAX} heavy-hitter sketches")
            entries = self._others[name] = {}
        current = entries.get(node)
        if current is not None and current.sketch.total >= sketch.total:
            return  # what we hold is as new or newer: merging again changes nothing
        if current is None and len(entries) >= NODES_PER_SKETCH_MAX:
            raise PeerError(f"more than {NODES_PER_SKETCH_MAX} nodes for {name!r}")
        entries[node] = NodeSketch(sketch, tuple(candidates))
        self._merged.pop(name, None)
        self._dirty[("frequent", name)] = None

    def _known_total(self, name: str, node: str) -> int:
        if node == self.node:
            tracker = self._own.get(name)
            return tracker.sketch.total if tracker is not None else -1
        entry = self._others.get(name, {}).get(node)
        return entry.sketch.total if entry is not None else -1

    def _adopt_own(
        self, name: str, sketch: CountMinSketch, candidates: list[bytes], from_self: bool
    ) -> None:
        """Our own entry coming back: newer only if this node lost state (or at restore)."""
        tracker = self._own.get(name)
        if tracker is not None and tracker.sketch.total >= sketch.total:
            return
        if tracker is None and not from_self and len(self.frequent_names()) >= SKETCHES_MAX:
            raise PeerError(f"peer sent more than {SKETCHES_MAX} heavy-hitter sketches")
        fresh = TopK(self._top_k, sketch)
        for item in candidates:
            fresh.add(item, 0)  # ranks the candidate without counting it
        self._own[name] = fresh
        self._merged.pop(name, None)
        self._dirty[("frequent", name)] = None


def _peer_name(name: Any) -> str:
    try:
        check_name(name)
    except InvalidArgument:
        raise PeerError(f"bad sketch name from peer: {name!r}") from None
    return str(name)


def _wire_total(wire: Any) -> int:
    """The ``total`` field of a sketch's wire form (checked fully only if it is newer)."""
    if isinstance(wire, list) and len(wire) == 5 and type(wire[3]) is int:
        return int(wire[3])
    raise PeerError("a count-min sketch is [width, depth, seed, total, rows]")


def _wire_bytes(wire: Any) -> int:
    if isinstance(wire, bytes):
        return len(wire)
    return sum(len(entry[0][4]) + 64 * len(entry[1]) for entry in wire.values())
