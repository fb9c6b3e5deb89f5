"""One request a coordinator has in flight: whom it asked, who answered, when it answers, and
the read repair it owes.

Theory of operation (Dynamo's coordinator). A put or get goes to its ``targets`` (the home
nodes the caller reports healthy, spares in place of the others); each answer is *heard* once
per target (``hear``). Once ``needed`` answers are in (W acks for a put, the coordinator's
own write counted; R replies for a get), the request is *answered* (``maybe_answer``): a put
with the object it wrote, a get with the merge of the copies heard so far. It stays in flight
until every target answered or its ``deadline`` passed (``expire`` fails it with ``Timeout``
if it was never answered), so a get can still hear the late replicas: ``repair`` is the merge
of every copy heard (the answer's merge extended, not redone), and ``out_of_date`` names the
targets whose copy differs, which the core sends the merged object (read repair).

Pure data and merges; no I/O, no clock (the deadline is the caller's monotonic time).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from blocks.core.errors import Timeout
from blocks.kv.cluster.messages import Fail, Reply
from blocks.kv.cluster.versions import VersionedObject, merge

__all__ = ["QuorumRound", "merged_with"]


@dataclass(slots=True)
class QuorumRound:
    """A put's or get's progress at its coordinator (see the module docs)."""

    is_put: bool
    key: bytes
    needed: int
    deadline: float
    targets: list[str]
    answered: bool = False
    result: VersionedObject | None = None  # a put's object; a get's merged answer
    merged_count: int = 0  # a get: how many of ``heard`` its answer merged
    heard: dict[str, VersionedObject | None] = field(default_factory=dict)

    def hear(self, sender: str, obj: VersionedObject | None) -> bool:
        """Count ``sender``'s answer; False (nothing counted) from a node that is not a target
        or was already heard."""
        if sender not in self.targets or sender in self.heard:
            return False
        self.heard[sender] = obj
        return True

    @property
    def complete(self) -> bool:
        """Every target answered."""
        return len(self.heard) == len(self.targets)

    def maybe_answer(self, request_id: int, lww: bool) -> Reply | None:
        """The answer, once, when ``needed`` answers are in; None before and after."""
        if self.answered or len(self.heard) < self.needed:
            return None
        self.answered = True
        if self.is_put:
            return Reply(request_id, self.result)
        self.result, self.merged_count = (
            merged_with(None, self.heard.values(), lww),
            len(self.heard),
        )
        return Reply(request_id, self.result)

    def expire(self, request_id: int) -> Fail | None:
        """The deadline passed: ``Timeout`` if never answered (then it counts as answered)."""
        if self.answered:
            return None
        self.answered = True
        return Fail(request_id, Timeout(f"{len(self.heard)} of {self.needed} replicas answered"))

    def repair(self, lww: bool) -> VersionedObject | None:
        """A get's merge of every copy heard, for read repair; None for a put or when no
        target held the key."""
        if self.is_put:
            return None
        heard = list(self.heard.values())
        if self.answered and self.merged_count:  # the answer merged the first ones
            return merged_with(self.result, heard[self.merged_count :], lww)
        return merged_with(None, heard, lww)

    def out_of_date(self, merged: VersionedObject) -> list[str]:
        """The targets heard whose copy is not ``merged``."""
        return [node for node, obj in self.heard.items() if obj != merged]


def merged_with(
    merged: VersionedObject | None, objects: Iterable[VersionedObject | None], lww: bool
) -> VersionedObject | None:
    """``merged`` merged with each of ``objects``; a copy equal to what is merged so far
    changes nothing (merge is idempotent on the normalised objects it returns)."""
    for obj in objects:
        if obj is not None and (merged is None or obj != merged):
            merged = merge(merged, obj, lww=lww)
    return merged
