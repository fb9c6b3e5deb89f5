"""Messages between kv cluster nodes and the effects a node core asks its driver to perform.

Plain frozen dataclasses: the core takes them in and gives them out as data. A request id
of 0 on ``PutReplica`` means "no ack wanted" (read repair). Objects travel as
``VersionedObject``; a driver that crosses a process boundary encodes them with
``versions.object_to_wire`` and decodes with ``object_from_wire``, which rejects malformed
input with ``PeerError``.
"""

from __future__ import annotations

from dataclasses import dataclass

from blocks.core.errors import BlocksError
from blocks.kv.cluster.versions import VersionedObject

__all__ = [
    "Effect",
    "Fail",
    "GetReplica",
    "GetReply",
    "Handoff",
    "HandoffAck",
    "Message",
    "PutAck",
    "PutReplica",
    "Reply",
    "Send",
    "SyncLeaves",
    "SyncObjects",
]


# -- messages between nodes ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PutReplica:
    request_id: int  # 0: no ack wanted (read repair)
    key: bytes
    obj: VersionedObject
    hint_owner: str | None = None


@dataclass(frozen=True, slots=True)
class PutAck:
    request_id: int


@dataclass(frozen=True, slots=True)
class GetReplica:
    request_id: int
    key: bytes


@dataclass(frozen=True, slots=True)
class GetReply:
    request_id: int
    obj: VersionedObject | None


@dataclass(frozen=True, slots=True)
class Handoff:
    key: bytes
    obj: VersionedObject


@dataclass(frozen=True, slots=True)
class HandoffAck:
    key: bytes


@dataclass(frozen=True, slots=True)
class SyncLeaves:
    root: int
    leaves: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SyncObjects:
    objects: tuple[tuple[bytes, VersionedObject], ...]
    leaves: tuple[int, ...]
    answer_expected: bool


Message = (
    PutReplica | PutAck | GetReplica | GetReply | Handoff | HandoffAck | SyncLeaves | SyncObjects
)


# -- effects ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    to: str
    message: Message


@dataclass(frozen=True, slots=True)
class Reply:
    request_id: int
    result: VersionedObject | None


@dataclass(frozen=True, slots=True)
class Fail:
    request_id: int
    error: BlocksError


Effect = Send | Reply | Fail
