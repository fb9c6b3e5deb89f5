"""One counters node's whole state: PN-Counters and sketches, as commands and records.

Theory of operation
-------------------
``CountersNode`` joins a ``GossipReplica`` (PN-Counters) and a ``SketchReplica`` (distinct
counts and heavy hitters) behind one gossip face (``tick``/``handle_message``, dispatched on
the message kind) and one command face: ``apply(record)``. A record is the node's own update,
``["increment", name, amount]``, ``["distinct", name, items]`` or ``["frequent", name,
items]``; the server applies it, then logs it (``blocks.counters.durable``), then answers, and
on restart replays the log through the same ``apply``, so what a node acknowledged is what it
recovers. State merged from peers is not logged: it is in the next snapshot, and peers push
it again anyway. Pure: no I/O, no clock.
"""

from __future__ import annotations

import random
from typing import Any

from blocks.core.errors import InvalidArgument, PeerError
from blocks.counters.gossip import GossipReady, GossipReplica
from blocks.counters.local import check_amount, check_name
from blocks.counters.sketchstate import SKETCHES, SketchReplica

__all__ = ["ITEMS_PER_CALL_MAX", "CountersNode", "Record"]

ITEMS_PER_CALL_MAX = 10_000
ITEM_BYTES_MAX = 1024
Record = list[Any]


def check_items(items: Any) -> list[bytes]:
    if not isinstance(items, list) or len(items) > ITEMS_PER_CALL_MAX:
        raise InvalidArgument(f"items must be a list of at most {ITEMS_PER_CALL_MAX}")
    for item in items:
        if not isinstance(item, bytes) or len(item) > ITEM_BYTES_MAX:
            raise InvalidArgument(f"each item must be bytes of at most {ITEM_BYTES_MAX}")
    return items


class CountersNode:
    """Counters and sketches of one node (``name``), gossiping with ``peers``."""

    def __init__(
        self,
        name: str,
        peers: list[str],
        *,
        rng: random.Random,
        hll_precision: int = 14,
        top_k: int = 100,
    ) -> None:
        self.counters = GossipReplica(name, peers, rng=rng)
        self.sketches = SketchReplica(
            name, peers, rng=random.Random(rng.random()), hll_precision=hll_precision, top_k=top_k
        )

    @property
    def name(self) -> str:
        return self.counters.name

    def apply(self, record: Record) -> int:
        """Carry out one record; the counter's value, the distinct estimate, or the total of
        the heavy-hitter sketch. ``InvalidArgument``/``Overloaded`` change nothing."""
        if not isinstance(record, list) or len(record) != 3:
            raise InvalidArgument("a counters record is [kind, name, argument]")
        kind, name, argument = record
        check_name(name)
        if kind == "increment":
            check_amount(argument)
            return self.counters.increment(name, argument)
        if kind == "distinct":
            return self.sketches.add_distinct(name, check_items(argument))
        if kind == "frequent":
            return self.sketches.add_frequent(name, check_items(argument))
        raise InvalidArgument(f"unknown counters record kind {kind!r}")

    def tick(self) -> GossipReady:
        return self.counters.tick().then(self.sketches.tick())

    def handle_message(self, source: str, message: Any) -> GossipReady:
        if isinstance(message, dict) and message.get("kind") == SKETCHES:
            return self.sketches.handle_message(source, message)
        return self.counters.handle_message(source, message)

    def snapshot(self) -> dict[str, Any]:
        return {"counters": self.counters.snapshot(), "sketches": self.sketches.snapshot()}

    def restore(self, state: Any) -> None:
        """Merge a ``snapshot()`` back in; ``PeerError`` when it is malformed."""
        if not isinstance(state, dict):
            raise PeerError("a counters snapshot is a map")
        self.counters.restore(state.get("counters", {}))
        self.sketches.restore(state.get("sketches", {}))
