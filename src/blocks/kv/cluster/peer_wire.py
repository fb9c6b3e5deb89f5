"""Wire forms of kv cluster messages: plain msgpack lists, validated field by field.

Peer messages travel one way (``Transport.send``) as ``[tag, ...]`` with a small integer tag;
client requests travel as request/reply (``Transport.request``) as ``[verb, ...]`` with a
string verb, so one handler tells them apart by the type of the first element.

=================  ===========================================================
``[1, rid, key, object, hint_owner|nil]``   PutReplica (``rid`` 0: no ack wanted)
``[2, rid]``                                 PutAck
``[3, rid, key]``                            GetReplica
``[4, rid, object|nil]``                     GetReply
``[5, key, object]`` / ``[6, key]``          Handoff / HandoffAck
``[7, root, [leaf, ...]]``                   SyncLeaves
``[8, [[key, object], ...], [leaf, ...], answer_expected]``  SyncObjects
``[9, [message, ...]]``                      a batch of data-path messages (tags 1-6)
``[20, [record, ...], reply_wanted]``        Gossip (membership table)
=================  ===========================================================

A batch carries the data-path messages one node had for one peer in one turn of its event
loop (``encode_batch``), so a busy coordinator sends one frame per peer per turn, not one per
replica request; ``decode_peer_batch`` parses it all or nothing.

Objects use ``versions.object_to_wire``; member records ``membership.record_to_wire``.
``decode_peer_message`` raises ``PeerError`` for anything malformed (wrong tag, arity, type,
an oversize key or collection) and never returns a half-valid message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blocks.core.errors import PeerError
from blocks.kv.cluster.membership import MemberRecord, record_from_wire, record_to_wire
from blocks.kv.cluster.merkle import DEPTH_MAX
from blocks.kv.cluster.messages import (
    GetReplica,
    GetReply,
    Handoff,
    HandoffAck,
    Message,
    PutAck,
    PutReplica,
    SyncLeaves,
    SyncObjects,
)
from blocks.kv.cluster.versions import object_from_wire, object_to_wire
from blocks.kv.limits import KEY_BYTES_MAX

__all__ = [
    "BATCH_MESSAGES_MAX",
    "Gossip",
    "PeerMessage",
    "decode_peer_batch",
    "decode_peer_message",
    "encode_batch",
    "encode_peer_message",
]

SYNC_OBJECTS_MAX = 100_000
MEMBERS_MAX = 1_024
BATCH_MESSAGES_MAX = 1_024
BATCH_TAG = 9
_BATCHABLE_TAGS = (1, 2, 3, 4, 5, 6)  # a tuple: ``in`` takes any value, hashable or not


@dataclass(frozen=True, slots=True)
class Gossip:
    records: tuple[MemberRecord, ...]
    reply_wanted: bool


PeerMessage = Message | Gossip


def encode_peer_message(message: PeerMessage) -> list[Any]:
    """The msgpack-ready list for ``message``."""
    match message:
        case PutReplica(rid, key, obj, hint):
            return [1, rid, key, object_to_wire(obj), hint]
        case PutAck(rid):
            return [2, rid]
        case GetReplica(rid, key):
            return [3, rid, key]
        case GetReply(rid, obj):
            return [4, rid, None if obj is None else object_to_wire(obj)]
        case Handoff(key, obj):
            return [5, key, object_to_wire(obj)]
        case HandoffAck(key):
            return [6, key]
        case SyncLeaves(root, leaves):
            return [7, root, list(leaves)]
        case SyncObjects(objects, leaves, answer):
            pairs = [[k, object_to_wire(o)] for k, o in objects]
            return [8, pairs, list(leaves), answer]
        case Gossip(records, reply_wanted):
            return [20, [record_to_wire(r) for r in records], reply_wanted]
    raise AssertionError(f"unknown message {message!r}")


def encode_batch(messages: list[list[Any]]) -> list[Any]:
    """One wire message carrying ``messages`` (encoded data-path messages, tags 1-6)."""
    assert 0 < len(messages) <= BATCH_MESSAGES_MAX
    return [BATCH_TAG, messages]


def decode_peer_batch(raw: Any) -> list[Message]:
    """The messages of a batch (``[9, [...]]``); ``PeerError`` if any of them is malformed
    or is not a data-path message (a batch holds no batch, gossip or anti-entropy)."""
    if not isinstance(raw, list) or len(raw) != 2 or raw[0] != BATCH_TAG:
        raise PeerError("batch must be [9, [message, ...]]")
    items = raw[1]
    if not isinstance(items, list) or not 0 < len(items) <= BATCH_MESSAGES_MAX:
        raise PeerError(f"batch must hold 1 to {BATCH_MESSAGES_MAX} messages")
    messages: list[Message] = []
    for item in items:
        if not isinstance(item, list) or not item or item[0] not in _BATCHABLE_TAGS:
            raise PeerError("a batch holds data-path messages (tags 1-6) only")
        decoded = decode_peer_message(item)
        assert not isinstance(decoded, Gossip)
        messages.append(decoded)
    return messages


_ARITY = {1: 5, 2: 2, 3: 3, 4: 3, 5: 3, 6: 2, 7: 3, 8: 4, 20: 3}


def decode_peer_message(raw: Any) -> PeerMessage:
    """Parse a peer message; ``PeerError`` if it is malformed in any way."""
    if not isinstance(raw, list) or not raw or type(raw[0]) is not int:
        raise PeerError("peer message must be [tag, ...]")
    tag = raw[0]
    if _ARITY.get(tag) != len(raw):
        raise PeerError(f"peer message tag {tag} with {len(raw)} fields")
    match tag:
        case 1:
            hint = raw[4]
            if hint is not None and not isinstance(hint, str):
                raise PeerError("hint owner must be a node name or nil")
            return PutReplica(_rid(raw[1]), _key(raw[2]), object_from_wire(raw[3]), hint)
        case 2:
            return PutAck(_rid(raw[1]))
        case 3:
            return GetReplica(_rid(raw[1]), _key(raw[2]))
        case 4:
            obj = None if raw[2] is None else object_from_wire(raw[2])
            return GetReply(_rid(raw[1]), obj)
        case 5:
            return Handoff(_key(raw[1]), object_from_wire(raw[2]))
        case 6:
            return HandoffAck(_key(raw[1]))
        case 7:
            return SyncLeaves(_uint(raw[1]), _leaves(raw[2], 1 << DEPTH_MAX))
        case 8:
            return _sync_objects(raw)
        case _:
            return _gossip(raw)


def _rid(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise PeerError("request id must be an int >= 0")
    return value


def _uint(value: Any) -> int:
    if type(value) is not int or not 0 <= value < 1 << 64:
        raise PeerError("expected an unsigned 64-bit int")
    return value


def _key(value: Any) -> bytes:
    if not isinstance(value, bytes) or len(value) > KEY_BYTES_MAX:
        raise PeerError(f"key must be bytes of at most {KEY_BYTES_MAX}")
    return value


def _leaves(value: Any, count_max: int) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > count_max:
        raise PeerError("leaves must be a bounded list")
    return tuple(_uint(v) for v in value)


def _sync_objects(raw: list[Any]) -> SyncObjects:
    pairs, leaves, answer = raw[1], raw[2], raw[3]
    if not isinstance(pairs, list) or len(pairs) > SYNC_OBJECTS_MAX:
        raise PeerError("sync objects must be a bounded list")
    if not isinstance(answer, bool):
        raise PeerError("answer_expected must be a bool")
    objects = []
    for pair in pairs:
        if not isinstance(pair, list) or len(pair) != 2:
            raise PeerError("sync object must be [key, object]")
        objects.append((_key(pair[0]), object_from_wire(pair[1])))
    return SyncObjects(tuple(objects), _leaves(leaves, 1 << DEPTH_MAX), answer)


def _gossip(raw: list[Any]) -> Gossip:
    records, reply_wanted = raw[1], raw[2]
    if not isinstance(records, list) or len(records) > MEMBERS_MAX:
        raise PeerError("gossip must carry a bounded list of records")
    if not isinstance(reply_wanted, bool):
        raise PeerError("reply_wanted must be a bool")
    return Gossip(tuple(record_from_wire(r) for r in records), reply_wanted)
