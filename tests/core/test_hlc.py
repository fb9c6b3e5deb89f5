"""The one hybrid-logical-clock algorithm in core, and the two blocks that keep their own types.

kv writes its timestamps on the wire and on disk, so the encoding an older build wrote is
pinned here byte for byte, both ways.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.core.clock import ManualClock
from blocks.core.codec import pack, unpack
from blocks.core.errors import InvalidArgument, Overloaded, PeerError
from blocks.core.hlc import HlcCore
from blocks.kv import HlcTimestamp as KvExported
from blocks.kv.cluster.hlc import HlcTimestamp as KvTimestamp
from blocks.kv.cluster.hlc import HybridLogicalClock as KvClock
from blocks.kv.cluster.persist import decode_record, encode_record
from blocks.kv.cluster.versions import (
    VersionVector,
    merge,
    object_from_wire,
    object_to_wire,
    update,
)
from blocks.sequencer import HlcTimestamp as SequencerExported
from blocks.sequencer.hlc import LOGICAL_MAX
from blocks.sequencer.hlc import HlcTimestamp as SequencerTimestamp
from blocks.sequencer.hlc import HybridLogicalClock as SequencerClock

START_MS = 1_700_000_000_000


class Pair(NamedTuple):
    wall_ms: int
    logical: int


# ``pack(object_to_wire(obj))`` for two concurrent writes, as written before HLC moved to core.
OLD_OBJECT_HEX = (
    "929295a16101c4036f6e65cf0000018bcfe5687b0095a16201c40374776fcf0000018bcfe5687b"
    "ce000111709292a1610192a16201"
)


def test_kv_encoding_of_timestamps_is_byte_identical_to_the_old_one() -> None:
    first = update(None, VersionVector(), "a", b"one", KvTimestamp(1_700_000_000_123, 0))
    second = update(None, VersionVector(), "b", b"two", KvTimestamp(1_700_000_000_123, 70_000))
    obj = merge(first, second)
    assert pack(object_to_wire(obj)).hex() == OLD_OBJECT_HEX
    decoded = object_from_wire(unpack(bytes.fromhex(OLD_OBJECT_HEX)))
    assert decoded == obj
    assert {s.timestamp for s in decoded.siblings} == {
        KvTimestamp(1_700_000_000_123, 0),
        KvTimestamp(1_700_000_000_123, 70_000),  # above 16 bits: kv's logical is unbounded
    }
    assert all(type(s.timestamp) is KvTimestamp for s in decoded.siblings)
    record = encode_record(obj, ["c"])
    assert decode_record(record) == (obj, ["c"])
    assert pack([unpack(bytes.fromhex(OLD_OBJECT_HEX)), ["c"]]) == record


def test_old_import_paths_are_the_same_types() -> None:
    assert KvExported is KvTimestamp and SequencerExported is SequencerTimestamp
    assert issubclass(KvClock, HlcCore) and issubclass(SequencerClock, HlcCore)
    assert isinstance(KvTimestamp(1, 2), tuple)  # kv's stays a tuple: it is compared as one


def test_far_ahead_remote_raises_the_owner_error_and_changes_nothing() -> None:
    clock = ManualClock(START_MS)
    kv = KvClock(clock, max_offset_ms=100)
    sequencer = SequencerClock(clock=clock, max_offset_ms=100)
    kv_before, sequencer_before = kv.now(), sequencer.now()
    with pytest.raises(PeerError, match="101 ms ahead"):
        kv.observe(KvTimestamp(START_MS + 101, 0))
    with pytest.raises(InvalidArgument, match="101 ms ahead"):
        sequencer.update(SequencerTimestamp(START_MS + 101, 0))
    assert kv.last == kv_before and sequencer.last == sequencer_before
    assert kv.observe(KvTimestamp(START_MS + 100, 3)) == KvTimestamp(START_MS + 100, 4)


def test_logical_bound_only_where_asked() -> None:
    clock = ManualClock(START_MS)
    bounded = SequencerClock(clock=clock)
    bounded.update(SequencerTimestamp(START_MS, LOGICAL_MAX - 1))
    with pytest.raises(Overloaded):
        bounded.now()
    assert bounded.last == SequencerTimestamp(START_MS, LOGICAL_MAX)
    unbounded = KvClock(clock)
    unbounded.observe(KvTimestamp(START_MS, LOGICAL_MAX))
    assert unbounded.now() == KvTimestamp(START_MS, LOGICAL_MAX + 2)


def test_negative_offset_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        HlcCore(ManualClock(0), Pair, max_offset_ms=-1)


# A step: ("tick", node, ms) moves a node's wall clock (possibly backwards), ("local", node) or
# ("send", from, to) is an event.
step = st.one_of(
    st.tuples(st.just("tick"), st.integers(0, 2), st.integers(-50, 50)),
    st.tuples(st.just("local"), st.integers(0, 2), st.just(0)),
    st.tuples(st.just("send"), st.integers(0, 2), st.integers(0, 2)),
)


@given(st.lists(step, max_size=60))
def test_timestamps_respect_happens_before_and_match_both_blocks(
    steps: list[tuple[str, int, int]],
) -> None:
    """Both wrappers compute the same pairs as the core over a plain tuple, and every event is
    stamped above the one before it on its node and above the message it received."""
    clocks = [ManualClock(START_MS + 10 * index) for index in range(3)]
    cores = [HlcCore(clock, Pair, max_offset_ms=10_000) for clock in clocks]
    kvs = [KvClock(clock, max_offset_ms=10_000) for clock in clocks]
    sequencers = [SequencerClock(clock=clock, max_offset_ms=10_000) for clock in clocks]
    for kind, first, second in steps:
        if kind == "tick":
            clocks[first].set_wall_ms(max(0, clocks[first].now_ms() + second))
            continue
        before = cores[first].last
        stamp = cores[first].now()
        assert tuple(kvs[first].now()) == tuple(stamp)
        sequenced = sequencers[first].now()
        assert (sequenced.wall_ms, sequenced.logical) == stamp
        assert stamp > before
        if kind == "send":
            received = cores[second].merge(stamp)
            assert tuple(kvs[second].observe(KvTimestamp(*stamp))) == tuple(received)
            merged = sequencers[second].update(SequencerTimestamp(*stamp))
            assert (merged.wall_ms, merged.logical) == received
            assert received > stamp
