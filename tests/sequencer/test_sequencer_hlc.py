from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.core.clock import ManualClock
from blocks.core.errors import InvalidArgument, Overloaded
from blocks.sequencer.hlc import LOGICAL_MAX, HlcTimestamp, HybridLogicalClock

START_MS = 1_700_000_000_000

# An event is (node, kind, argument): kind 0 = local event, 1 = send to node argument,
# 2 = deliver the oldest pending message at this node, 3 = move this node's clock.
events = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 3), st.integers(-30, 30)), max_size=80
)


@given(script=events)
def test_happens_before_implies_smaller_timestamp(script: list[tuple[int, int, int]]) -> None:
    clocks = [ManualClock(wall_ms=START_MS + 7 * node) for node in range(3)]
    nodes = [HybridLogicalClock(clock=clock, max_offset_ms=10_000) for clock in clocks]
    last: list[HlcTimestamp | None] = [None, None, None]
    inbox: list[list[HlcTimestamp]] = [[], [], []]
    for node, kind, argument in script:
        if kind == 3:
            clocks[node].jump_wall_ms(argument)
            continue
        if kind == 2:
            if not inbox[node]:
                continue
            sent = inbox[node].pop(0)
            stamp = nodes[node].update(sent)
            assert stamp > sent
        else:
            stamp = nodes[node].now()
            if kind == 1:
                inbox[argument % 3].append(stamp)
        previous = last[node]
        assert previous is None or stamp > previous
        last[node] = stamp
        # Wall part never runs ahead of the largest physical clock seen anywhere.
        assert stamp.wall_ms <= max(c.now_ms() for c in clocks) + 30 * len(script)


def test_wall_part_tracks_physical_time() -> None:
    clock = ManualClock(wall_ms=START_MS)
    hlc = HybridLogicalClock(clock=clock)
    assert hlc.now() == HlcTimestamp(START_MS, 0)
    assert hlc.now() == HlcTimestamp(START_MS, 1)
    clock.jump_wall_ms(-100)
    assert hlc.now() == HlcTimestamp(START_MS, 2)
    clock.set_wall_ms(START_MS + 1)
    assert hlc.now() == HlcTimestamp(START_MS + 1, 0)
    assert hlc.update(HlcTimestamp(START_MS + 1, 9)) == HlcTimestamp(START_MS + 1, 10)


def test_remote_far_in_the_future_is_refused_and_changes_nothing() -> None:
    clock = ManualClock(wall_ms=START_MS)
    hlc = HybridLogicalClock(clock=clock, max_offset_ms=100)
    before = hlc.now()
    with pytest.raises(InvalidArgument):
        hlc.update(HlcTimestamp(START_MS + 101, 0))
    assert hlc.last == before
    assert hlc.update(HlcTimestamp(START_MS + 100, 0)) == HlcTimestamp(START_MS + 100, 1)


def test_logical_overflow_raises() -> None:
    clock = ManualClock(wall_ms=START_MS)
    hlc = HybridLogicalClock(clock=clock)
    hlc.update(HlcTimestamp(START_MS, LOGICAL_MAX - 1))
    with pytest.raises(Overloaded):
        hlc.now()


@given(wall=st.integers(0, (1 << 48) - 1), logical=st.integers(0, LOGICAL_MAX))
def test_pack_round_trips_and_keeps_order(wall: int, logical: int) -> None:
    stamp = HlcTimestamp(wall, logical)
    assert HlcTimestamp.unpack(stamp.pack()) == stamp
    if logical:
        assert HlcTimestamp(wall, logical - 1).pack() < stamp.pack()


@pytest.mark.parametrize("bad", [-1, 1 << 64, "5"])
def test_unpack_refuses_bad_input(bad: object) -> None:
    with pytest.raises(InvalidArgument):
        HlcTimestamp.unpack(bad)  # type: ignore[arg-type]
