"""Messages between kv cluster nodes and the effects a node core asks its driver to perform.

Plain frozen dataclasses: the core takes them in and gives them out as data. A core step
returns a ``KVReady`` (``blocks.core.ready.Ready``): ``messages`` as ``(node, message)``
pairs and ``replies`` (``Reply``/``Fail``) to the client requests it coordinates. It lists no
records: the core marks the keys it changed (``KVNodeCore.dirty``) and the driver saves them
all in one write per loop turn before any message or reply of that turn leaves. A request id
of 0 on ``PutReplica`` means "no ack wanted" (read repair). Objects travel as
``VersionedObject``; a driver that crosses a process boundary encodes them with
``versions.object_to_wire`` and decodes with ``object_from_wire``, which rejects malformed
input with ``PeerError``.
"""

from __future__ import annotations

from dataclasses import dataclass

from blocks.core.errors import BlocksError
from blocks.core.ready import Ready
from blocks.kv.cluster.versions import VersionedObject

__all__ = [
    "Fail",
    "GetReplica",
    "GetReply",
    "Handoff",
    "HandoffAck",
    "KVReady",
    "Message",
    "PutAck",
    "PutReplica",
    "Reply",
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


# -- replies to client requests ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    request_id: int
    result: VersionedObject | None


@dataclass(frozen=True, slots=True)
class Fail:
    request_id: int
    error: BlocksError


KVReady = Ready[Message, Reply | Fail, None]
"""A core step's effects: ``messages`` to peers and ``replies`` to client requests."""
