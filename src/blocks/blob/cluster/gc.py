"""Collecting unreferenced chunks in a cluster: marks, a grace period, every node's word.

Theory of operation. With replicated metadata no node deletes a chunk when its own reference
count reaches zero (``replica``): another node may have just deduplicated against it, or hold
a record this one has not received yet. A node collects only shards on its *own* disk, in
rounds (``ClusterCollector``, a pure core; ``replication.Replicator`` drives it):

1. *Candidates*: chunks with shards here, every shard file older than the grace period
   (by modification time; a write or a repair of the chunk refreshes it), that this node's
   metadata and operations in flight do not reference.
2. *Marks*: a candidate is marked the first round it is seen, and stays marked while it stays
   a candidate; it becomes *due* only once it has been marked for the grace period too. A
   chunk referenced again in between loses its mark.
3. *Agreement*: the due chunks are sent to every other node, which answers which of them its
   metadata or its operations in flight reference. A node that does not answer vetoes the
   whole round. A chunk is deleted only if no node references it.
4. Just before deleting, the shard files' ages and the local references are checked again.

Why every node rather than a majority: a majority that holds no reference is enough for
records acknowledged *and* spread to that majority, but not for a node that has lost its
data directory and not yet caught up, nor for an upload in flight that deduplicated against
the chunk on a node outside the majority. Asking every node costs liveness (no collection
while a node is down), never safety: a leak, never a loss.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["MARKS_MAX", "ClusterCollector", "RoundPlan"]

MARKS_MAX = 1_000_000
"""Chunks marked at once; past it, new candidates wait for a later round (counted)."""


@dataclass(frozen=True, slots=True)
class RoundPlan:
    """What one round asks the other nodes about (``due``) and how many it marked."""

    due: tuple[str, ...]
    marked: int


class ClusterCollector:
    """Marks and decisions of the cluster collector (no I/O; time is passed in)."""

    def __init__(self, grace_ms: int, *, marks_max: int = MARKS_MAX) -> None:
        if grace_ms < 0:
            raise ValueError("grace_ms must be >= 0")
        self.grace_ms = grace_ms
        self.marks_max = marks_max
        self.marks: dict[str, int] = {}
        """Chunk id -> when it was first seen as a candidate (ms)."""
        self.marks_refused = 0
        self.collected = 0
        self.vetoed_rounds = 0

    def plan(self, candidates: Iterable[str], now_ms: int) -> RoundPlan:
        """Start a round with this node's current candidates (old, unreferenced here):
        forget marks of chunks that are no longer candidates, mark new ones, and return
        those marked for at least the grace period."""
        current = set(candidates)
        for chunk_id in [c for c in self.marks if c not in current]:
            del self.marks[chunk_id]
        marked = 0
        for chunk_id in sorted(current - self.marks.keys()):
            if len(self.marks) >= self.marks_max:
                self.marks_refused += 1
                continue
            self.marks[chunk_id] = now_ms
            marked += 1
        due = tuple(sorted(c for c, at in self.marks.items() if now_ms - at >= self.grace_ms))
        return RoundPlan(due, marked)

    def decide(self, due: Iterable[str], answers: list[set[str] | None]) -> list[str]:
        """The chunks to delete, given each other node's answer (the chunks it references;
        ``None`` for a node that did not answer, which vetoes the round)."""
        if any(answer is None for answer in answers):
            self.vetoed_rounds += 1
            return []
        referenced: set[str] = set()
        for answer in answers:
            assert answer is not None
            referenced |= answer
        chosen = [chunk_id for chunk_id in due if chunk_id not in referenced]
        for chunk_id in referenced:
            self.marks.pop(chunk_id, None)
        return chosen

    def deleted(self, chunk_id: str) -> None:
        """A chosen chunk was deleted: forget its mark."""
        self.marks.pop(chunk_id, None)
        self.collected += 1
