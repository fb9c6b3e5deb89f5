from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.core.errors import InvalidArgument, PeerError
from blocks.counters.crdt import GCounter, PNCounter

replicas = st.sampled_from(["a", "b", "c", "d"])
g_counters = st.dictionaries(replicas, st.integers(0, 1000)).map(GCounter)
pn_counters = st.builds(PNCounter, g_counters, g_counters)


@given(x=pn_counters, y=pn_counters, z=pn_counters)
def test_merge_is_a_join(x: PNCounter, y: PNCounter, z: PNCounter) -> None:
    assert x.merge(y) == y.merge(x)
    assert x.merge(y).merge(z) == x.merge(y.merge(z))
    assert x.merge(x) == x
    assert x <= x.merge(y) and y <= x.merge(y)


@given(
    ops=st.lists(st.tuples(replicas, st.integers(-50, 50)), max_size=40), split=st.integers(0, 40)
)
def test_replicas_merging_see_exactly_the_sum(ops: list[tuple[str, int]], split: int) -> None:
    # Each replica applies only its own operations; merging them all gives the total.
    states = {name: PNCounter() for name in "abcd"}
    for replica, amount in ops:
        states[replica] = states[replica].increment(replica, amount)
    first = PNCounter()
    for name in "ab":
        first = first.merge(states[name])
    second = PNCounter()
    for name in "dcba"[: 1 + split % 4]:
        second = second.merge(states[name])
    assert first.merge(second).merge(states["c"]).merge(states["d"]).value == sum(a for _, a in ops)


@given(x=g_counters)
def test_wire_round_trip(x: GCounter) -> None:
    assert GCounter.from_wire(x.to_wire()) == x
    pn = PNCounter(x, x.increment("z", 3))
    assert PNCounter.from_wire(pn.to_wire()) == pn
    assert pn.value == -3


@pytest.mark.parametrize(
    "wire", [None, [], {"a": -1}, {"a": 1.5}, {"": 1}, {3: 1}, {"a": True}, {"a": 1 << 64}]
)
def test_malformed_peer_state_is_a_peer_error(wire: object) -> None:
    with pytest.raises(PeerError):
        GCounter.from_wire(wire)
    with pytest.raises(PeerError):
        PNCounter.from_wire([wire, {}])


@pytest.mark.parametrize("replica,amount", [("", 1), ("a", -1), (3, 1), ("a", 1.0)])
def test_bad_increments_are_refused(replica: object, amount: object) -> None:
    with pytest.raises(InvalidArgument):
        GCounter().increment(replica, amount)  # type: ignore[arg-type]


def test_decrement_and_overflow() -> None:
    counter = PNCounter().increment("a", 5).decrement("b", 7)
    assert counter.value == -2
    with pytest.raises(InvalidArgument):
        GCounter({"a": (1 << 63) - 1}).increment("a")
