"""The client's reply parse (``Versioned.from_wire``) answers exactly as the general path
(``Versioned.of(object_from_wire(raw))``) for every object and every malformed reply."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.core.codec import pack, unpack
from blocks.core.errors import PeerError
from blocks.kv.client import Versioned
from blocks.kv.cluster.hlc import HlcTimestamp
from blocks.kv.cluster.versions import (
    VersionedObject,
    VersionVector,
    merge,
    object_from_wire,
    object_to_wire,
    update,
)

nodes = st.sampled_from(["a", "b", "n1", "n2", ""])
values = st.none() | st.binary(max_size=4)


def _general(raw: Any) -> Versioned | type[PeerError]:
    try:
        return Versioned.of(object_from_wire(raw))
    except PeerError:
        return PeerError


def _fast(raw: Any) -> Versioned | type[PeerError]:
    try:
        return Versioned.from_wire(raw)
    except PeerError:
        return PeerError


@st.composite
def objects(draw: st.DrawFn) -> VersionedObject:
    """Objects made by writes and merges, as nodes make them (one or more siblings)."""
    obj: VersionedObject | None = None
    for _ in range(draw(st.integers(1, 4))):
        seen = VersionVector() if obj is None or draw(st.booleans()) else obj.context
        stamp = HlcTimestamp(draw(st.integers(0, 9)), draw(st.integers(0, 3)))
        written = update(obj, seen, draw(nodes), draw(values), stamp)
        obj = merge(obj, written) if draw(st.booleans()) else written
    assert obj is not None
    return obj


@given(objects())
def test_an_object_reads_the_same_either_way(obj: VersionedObject) -> None:
    raw = unpack(pack(object_to_wire(obj)))
    assert _fast(raw) == _general(raw) == Versioned.of(obj)


@given(objects(), st.data())
def test_a_changed_field_reads_the_same_either_way(obj: VersionedObject, data: Any) -> None:
    raw = unpack(pack(object_to_wire(obj)))
    path = [data.draw(st.integers(0, 1))]
    target = raw[path[0]]
    while isinstance(target, list) and target and data.draw(st.booleans()):
        index = data.draw(st.integers(0, len(target) - 1))
        path.append(index)
        target = target[index]
    replacement = data.draw(
        st.none()
        | st.integers(-2, 2**64)
        | st.text(max_size=2)
        | st.binary(max_size=2)
        | st.lists(st.integers(0, 3), max_size=3)
    )
    holder = raw
    for index in path[:-1]:
        holder = holder[index]
    holder[path[-1]] = replacement
    assert _fast(raw) == _general(raw)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        [],
        [[], []],
        [[["a", 1, b"v", 0, 0]], [["b", 1], ["a", 1]]],  # unsorted context: general path
        [[["a", 2, b"v", 0, 0]], [["a", 1]]],  # not covered
        [[["a", 1, b"v", 0, 0]], [["a", 1], ["a", 2]]],  # duplicate node
        [[["a", 1, b"v", 0, -1]], [["a", 1]]],
        [[["a", 1, None, 0, 0]], [["a", 1]]],  # a delete: no value, no siblings
        [[["a", 1, b"v", 0, 0]], [["a", 2**63]]],
    ],
)
def test_edge_replies_read_the_same_either_way(raw: Any) -> None:
    assert _fast(raw) == _general(raw)
