"""Messages between the replicas of a partition, and their msgpack form.

Each message is a frozen dataclass; on the wire it is a list of its fields in order, preceded
by the message's name, so ``decode(encode(m)) == m``. ``decode`` checks the name, the number
of fields and every field's type, and raises ``PeerError`` for anything else: a malformed
message from a peer never reaches the replica.

``HardState`` and ``EpochMarker`` are the records a replica's ``ReplicaReady`` asks its driver
to persist; they never travel.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, TypeVar

from blocks.core.errors import PeerError
from blocks.core.ready import Ready

__all__ = [
    "BeginEpoch",
    "EpochMarker",
    "FetchDecision",
    "FetchReplyInfo",
    "FetchRequest",
    "HardState",
    "Message",
    "ReplicaReady",
    "ReplicaRecord",
    "VoteReply",
    "VoteRequest",
    "decode",
    "encode",
]


@dataclass(frozen=True, slots=True)
class VoteRequest:
    epoch: int  # the epoch the candidate asks for
    candidate: str
    last_epoch: int
    log_end: int
    pre: bool  # a pre-vote: nobody changes state


@dataclass(frozen=True, slots=True)
class VoteReply:
    epoch: int  # the voter's epoch
    vote_epoch: int  # the epoch the vote is about
    granted: bool
    pre: bool
    leader: str | None


@dataclass(frozen=True, slots=True)
class BeginEpoch:
    epoch: int
    leader: str


@dataclass(frozen=True, slots=True)
class FetchRequest:
    epoch: int
    offset: int  # the follower's log end
    last_epoch: int  # the epoch of its record at offset - 1 (0 if none)
    # Callers on the follower wait to learn the high watermark: answer as soon as it moves
    # (else the leader may hold the fetch until records arrive or ``fetch_wait_ms``).
    waiting: bool = False


@dataclass(frozen=True, slots=True)
class FetchDecision:
    """The leader's answer to a fetch, before the driver adds records."""

    kind: str  # "records", "diverging", "fenced" or "behind" (below the log start: offset)
    epoch: int
    leader: str | None
    hw: int
    diverging_epoch: int = 0
    diverging_end: int = 0
    offset: int = 0  # first record to send ("records"); the leader's log start ("behind")


FetchReplyInfo = FetchDecision
"""What a follower learns from a fetch answer (the records travel beside it)."""

Message = VoteRequest | VoteReply | BeginEpoch | FetchRequest | FetchDecision


# -- what a replica asks its driver to persist (never on the wire) ---------------------------


@dataclass(frozen=True, slots=True)
class HardState:
    """What a replica must not forget (a vote given twice in one epoch breaks elections):
    persist it, replacing the previous one atomically, before the step's messages leave."""

    epoch: int
    voted_for: str | None


@dataclass(frozen=True, slots=True)
class EpochMarker:
    """A new leader of ``epoch`` owes its log a control record in that epoch (Raft's rule:
    only a record of its own epoch moves its high watermark): append one at the log's end."""

    epoch: int


ReplicaRecord = HardState | EpochMarker
ReplyT = TypeVar("ReplyT")
ReplicaReady = Ready[Message, ReplyT, ReplicaRecord]
"""A step's effects; ``ReplicaReady[None]`` for a step that answers nothing."""

_CLASSES: dict[str, type[Any]] = {
    cls.__name__: cls for cls in (VoteRequest, VoteReply, BeginEpoch, FetchRequest, FetchDecision)
}
_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "str": (str,),
    "bool": (bool,),
    "str | None": (str, type(None)),
}


# Each class's fields as (name, allowed types), worked out once (every field is a scalar, so
# a message's wire form is its name and its field values, shallow).
_SPECS: dict[str, tuple[tuple[str, tuple[type, ...]], ...]] = {
    name: tuple((f.name, _TYPES[str(f.type)]) for f in fields(cls))
    for name, cls in _CLASSES.items()
}


def encode(message: Message) -> list[Any]:
    name = type(message).__name__
    return [name, *(getattr(message, field) for field, _ in _SPECS[name])]


def decode(wire: Any) -> Message:
    if not isinstance(wire, list) or not wire or wire[0] not in _CLASSES:
        raise PeerError("malformed replication message")
    cls = _CLASSES[wire[0]]
    spec = _SPECS[wire[0]]
    if len(wire) != len(spec) + 1:
        raise PeerError(f"{wire[0]} has {len(wire) - 1} fields, expected {len(spec)}")
    for (field, allowed), value in zip(spec, wire[1:], strict=True):
        if not isinstance(value, allowed) or (bool not in allowed and isinstance(value, bool)):
            raise PeerError(f"{wire[0]}.{field} has the wrong type")
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            raise PeerError(f"{wire[0]}.{field} is negative")
    message: Message = cls(*wire[1:])
    return message
