"""Dotted version vectors against ground truth: siblings are exactly the concurrent writes."""

from __future__ import annotations

from functools import reduce

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.core.clock import ManualClock
from blocks.core.errors import InvalidArgument, PeerError
from blocks.kv.cluster.hlc import HlcTimestamp, HybridLogicalClock
from blocks.kv.cluster.versions import (
    Dot,
    VersionedObject,
    VersionVector,
    decode_context,
    encode_context,
    merge,
    object_from_wire,
    object_to_wire,
    update,
)

REPLICAS = ["a", "b", "c"]

# An action: ("write", at replica, context read from replica, delete?) or ("sync", into, from).
action = st.one_of(
    st.tuples(st.just("write"), st.integers(0, 2), st.integers(0, 2), st.booleans()),
    st.tuples(st.just("sync"), st.integers(0, 2), st.integers(0, 2), st.just(False)),
)


def _run(actions: list[tuple[str, int, int, bool]]) -> tuple[list[VersionedObject | None], dict]:
    """Play actions; return replica states and, per write, its dot and causal history."""
    states: list[VersionedObject | None] = [None, None, None]
    writes: dict[Dot, frozenset[Dot]] = {}  # dot -> every earlier write the writer had seen
    for step, (kind, first, second, delete) in enumerate(actions):
        if kind == "sync":
            states[first] = merge(states[first], states[second])
            continue
        read = states[second]
        context = read.context if read else VersionVector()
        seen = frozenset(d for d in writes if context.covers(d))
        new = update(
            states[first],
            context,
            REPLICAS[first],
            None if delete else b"w%d" % step,
            HlcTimestamp(step, 0),
        )
        dot = next(s.dot for s in new.siblings if s.dot not in writes)
        writes[dot] = seen
        states[first] = new
    return states, writes


@given(st.lists(action, max_size=25))
def test_after_full_sync_siblings_are_exactly_the_concurrent_writes(actions: list) -> None:
    states, writes = _run(actions)
    merged = reduce(lambda x, y: merge(x, y), states, None)
    superseded = set().union(*writes.values()) if writes else set()
    maximal = {dot for dot in writes if dot not in superseded}
    assert {s.dot for s in merged.siblings} == maximal


@given(st.lists(action, max_size=20))
def test_merge_is_commutative_associative_idempotent(actions: list) -> None:
    states, _ = _run(actions)
    a, b, c = states
    assert merge(a, b) == merge(b, a)
    assert merge(merge(a, b), c) == merge(a, merge(b, c))
    assert merge(a, a) == merge(a, None)


@given(st.lists(action, max_size=20))
def test_lww_keeps_one_sibling_the_latest(actions: list) -> None:
    states, _ = _run(actions)
    merged = reduce(lambda x, y: merge(x, y, lww=True), states, None)
    assert len(merged.siblings) <= 1
    full = reduce(lambda x, y: merge(x, y), states, None)
    if full.siblings:
        best = max(full.siblings, key=lambda s: (s.timestamp, s.dot))
        assert merged.siblings == (best,)


def test_write_with_read_context_resolves_siblings() -> None:
    ts = HlcTimestamp(1, 0)
    first = update(None, VersionVector(), "a", b"x", ts)
    left = update(first, first.context, "a", b"left", ts)
    right = update(first, first.context, "b", b"right", ts)
    both = merge(left, right)
    assert sorted(both.values) == [b"left", b"right"]
    resolved = update(both, both.context, "a", b"resolved", ts)
    assert resolved.values == [b"resolved"]
    assert merge(resolved, right).values == [b"resolved"]


def test_wire_round_trip_and_malformed_input() -> None:
    ts = HlcTimestamp(5, 1)
    obj = update(update(None, VersionVector(), "a", b"x", ts), VersionVector(), "b", None, ts)
    assert object_from_wire(object_to_wire(obj)) == obj
    assert decode_context(encode_context(obj.context)) == obj.context
    assert decode_context(None) == VersionVector()
    for bad in (None, [], [[["a", 1, b"x", 1]], []], [[["a", 5, b"x", 1, 0]], [["a", 1]]]):
        with pytest.raises(PeerError):
            object_from_wire(bad)
    for bad_context in (b"\xc1", b"\x91\x92\xa1a\x00", b"\x92"):
        with pytest.raises(InvalidArgument):
            decode_context(bad_context)


def test_an_objects_wire_form_is_made_once_and_leaves_equality_alone() -> None:
    ts = HlcTimestamp(5, 1)
    obj = update(None, VersionVector(), "a", b"x", ts)
    twin = update(None, VersionVector(), "a", b"x", ts)
    wire = object_to_wire(obj)
    assert object_to_wire(obj) is wire  # kept: a put sends one object several times
    assert obj == twin and hash(obj) == hash(twin) and twin.wire is None
    assert object_to_wire(twin) == wire
    later = update(obj, obj.context, "a", b"y", ts)
    assert later.wire is None and object_from_wire(object_to_wire(later)) == later


def test_hybrid_clock_is_monotonic_and_follows_messages() -> None:
    clock = ManualClock(wall_ms=1_000)
    hlc = HybridLogicalClock(clock, max_offset_ms=1_000)
    first = hlc.now()
    clock.jump_wall_ms(-500)  # the wall clock steps back
    second = hlc.now()
    assert second > first
    observed = hlc.observe(HlcTimestamp(1_050, 7))
    assert observed > HlcTimestamp(1_050, 7) and hlc.now() > observed
    with pytest.raises(PeerError):
        hlc.observe(HlcTimestamp(clock.now_ms() + 10_000, 0))


vectors = st.dictionaries(st.sampled_from(["a", "b", "c", "d", "e"]), st.integers(0, 4)).map(
    VersionVector.from_mapping
)


@given(vectors, vectors)
def test_join_is_the_entrywise_maximum_on_every_path(
    left: VersionVector, right: VersionVector
) -> None:
    # join answers without a merge when one side covers the other: same result either way.
    expected = {
        n: max(left.get(n), right.get(n)) for n in {*dict(left.entries), *dict(right.entries)}
    }
    for joined in (left.join(right), right.join(left)):
        assert joined == VersionVector.from_mapping(expected)
    assert left.join(left) == left


def test_malformed_sibling_fields_are_refused_one_by_one() -> None:
    good = ["a", 1, b"v", 5, 0]
    assert object_from_wire([[good], [["a", 1]]]).values == [b"v"]
    for index, bad in [(1, -1), (1, True), (3, -1), (3, 1.5), (4, -1), (2, "v"), (0, 7)]:
        item = list(good)
        item[index] = bad
        with pytest.raises(PeerError):
            object_from_wire([[item], [["a", 1]]])
