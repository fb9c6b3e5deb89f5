"""What a kv client read or wrote: ``Versioned``, and its parse from a node's reply.

``Versioned.from_wire`` is ``Versioned.of(object_from_wire(raw))`` without the object in the
usual case (one sibling under a context the node sends sorted: every put reply and every read
of a key without conflicts); anything else takes the general path, so the answer and the
checks are the same either way (``tests/kv/test_kv_client_reply.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blocks.core.codec import pack
from blocks.kv.cluster.versions import (
    COUNTER_MAX,
    NODES_PER_VECTOR_MAX,
    VersionedObject,
    VersionVector,
    encode_context,
    object_from_wire,
)

__all__ = ["Versioned"]


@dataclass(frozen=True, slots=True)
class Versioned:
    """A read (or the result of a write): ``value`` is None when the key is absent."""

    value: bytes | None
    siblings: tuple[bytes, ...]
    context: bytes

    @classmethod
    def of(cls, obj: VersionedObject | None) -> Versioned:
        if obj is None:
            return cls(None, (), encode_context(VersionVector()))
        return cls(obj.value, tuple(obj.values), encode_context(obj.context))

    @classmethod
    def from_wire(cls, raw: Any) -> Versioned:
        """``Versioned.of(object_from_wire(raw))``: the same answer and the same checks
        (``PeerError`` on anything malformed), without building the object when ``raw`` is
        one sibling under a context in the order the nodes send it (the reply to a write
        that saw everything, and a read of a key without conflicts)."""
        if type(raw) is list and len(raw) == 2:
            siblings, context = raw
            if type(siblings) is list and len(siblings) == 1 and _lone_sibling_ok(siblings[0]):
                sibling = siblings[0]
                if _sorted_context_covers(context, sibling[0], sibling[1]):
                    value = sibling[2]
                    return cls(value, () if value is None else (value,), pack(context))
        return cls.of(object_from_wire(raw))


def _lone_sibling_ok(item: Any) -> bool:
    """``item`` passes ``object_from_wire``'s sibling check with exact types."""
    return (
        type(item) is list
        and len(item) == 5
        and type(item[0]) is str
        and type(item[1]) is int
        and item[1] >= 0
        and (item[2] is None or type(item[2]) is bytes)
        and type(item[3]) is int
        and item[3] >= 0
        and type(item[4]) is int
        and item[4] >= 0
    )


def _sorted_context_covers(context: Any, node: str, counter: int) -> bool:
    """``context`` is a valid version vector's wire form, strictly sorted by node (so packing
    it again gives ``encode_context``'s bytes), and covers the dot ``(node, counter)``."""
    if type(context) is not list or not 1 <= len(context) <= NODES_PER_VECTOR_MAX:
        return False
    previous = ""
    seen = 0
    for entry in context:
        if type(entry) is not list or len(entry) != 2:
            return False
        name, count = entry
        if type(name) is not str or type(count) is not int or not 1 <= count <= COUNTER_MAX:
            return False
        if name <= previous:  # unsorted, repeated, or the empty name: the general path
            return False
        previous = name
        if name == node:
            seen = count
    return counter <= seen
