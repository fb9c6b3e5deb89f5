"""``blocks.core.ready.Ready``: the effects a pure core hands its driver."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.core.ready import NOTHING, Ready

R = Ready[str, int, bytes]

readies = st.builds(
    Ready,
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.text(max_size=3)), max_size=3),
    st.lists(st.binary(max_size=3), max_size=3),
    st.lists(st.integers(), max_size=3),
    st.lists(st.tuples(st.sampled_from(["tick", "flush"]), st.integers(0, 99)), max_size=2),
)


def _flat(ready: Ready[Any, Any, Any]) -> tuple[list[Any], ...]:
    return (
        list(ready.messages),
        list(ready.records),
        list(ready.replies),
        list(ready.timers),
    )


def test_the_empty_ready_has_nothing_to_do() -> None:
    assert NOTHING.is_empty
    assert Ready().is_empty
    assert not Ready(messages=[("a", "m")]).is_empty
    assert not Ready(records=[b"r"]).is_empty
    assert not Ready(replies=[1]).is_empty
    assert not Ready(timers=[("tick", 5)]).is_empty


def test_a_ready_is_frozen() -> None:
    ready: R = Ready(messages=[("a", "m")])
    with pytest.raises(dataclasses.FrozenInstanceError):
        ready.messages = []  # type: ignore[misc]


def test_then_keeps_each_field_in_order() -> None:
    first: R = Ready([("a", "1")], [b"x"], [1], [("tick", 10)])
    second: R = Ready([("b", "2"), ("a", "3")], [b"y"], [2], [("tick", 20)])
    both = first.then(second)
    assert _flat(both) == (
        [("a", "1"), ("b", "2"), ("a", "3")],
        [b"x", b"y"],
        [1, 2],
        [("tick", 10), ("tick", 20)],
    )
    assert _flat(first) == ([("a", "1")], [b"x"], [1], [("tick", 10)])  # unchanged


def test_then_with_nothing_is_the_other_unchanged() -> None:
    ready: R = Ready(replies=[7])
    assert ready.then(NOTHING) is ready
    assert NOTHING.then(ready) is ready


@given(readies, readies, readies)
def test_then_is_associative_and_concatenates(a: R, b: R, c: R) -> None:
    left, right = a.then(b).then(c), a.then(b.then(c))
    assert _flat(left) == _flat(right)
    for index in range(4):
        assert _flat(left)[index] == _flat(a)[index] + _flat(b)[index] + _flat(c)[index]
