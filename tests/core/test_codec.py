"""codec: round trips, size limits, and that bad bytes only ever raise InvalidArgument."""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.core.codec import pack, unpack
from blocks.core.errors import InvalidArgument

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.binary(max_size=30),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers(-5, 5)), children, max_size=5),
    ),
    max_leaves=20,
)


@given(values)
def test_round_trip(value: Any) -> None:
    assert unpack(pack(value)) == value


@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=5).map(tuple))
def test_tuples_decode_as_lists(value: tuple[int, ...]) -> None:
    assert unpack(pack(value)) == list(value)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_only_raise_invalid_argument(data: bytes) -> None:
    with contextlib.suppress(InvalidArgument):
        unpack(data)


@given(values, st.binary(min_size=1, max_size=8))
def test_trailing_bytes_are_refused(value: Any, trailing: bytes) -> None:
    with pytest.raises(InvalidArgument, match="trailing"):
        unpack(pack(value) + trailing)


@given(values)
def test_every_strict_prefix_is_refused(value: Any) -> None:
    data = pack(value)
    for cut in range(len(data)):
        with pytest.raises(InvalidArgument):
            unpack(data[:cut])


@pytest.mark.parametrize("bad", [object(), {1, 2}, 2**64, -(2**63) - 1, 1j, [1, object()]])
def test_unsupported_values_are_refused(bad: Any) -> None:
    with pytest.raises(InvalidArgument):
        pack(bad)


def test_size_limits_on_both_sides() -> None:
    data = pack(b"x" * 100)
    with pytest.raises(InvalidArgument, match="exceeds"):
        pack(b"x" * 100, size_max=50)
    with pytest.raises(InvalidArgument, match="exceeds"):
        unpack(data, size_max=50)
    assert unpack(data, size_max=len(data)) == b"x" * 100
    # A header announcing a huge array must not allocate it.
    hostile = b"\xdd\xff\xff\xff\xff"
    with pytest.raises(InvalidArgument):
        unpack(hostile, size_max=1024)


def test_unpack_refuses_non_bytes() -> None:
    with pytest.raises(InvalidArgument):
        unpack("text")  # type: ignore[arg-type]
    assert unpack(bytearray(msgpack.packb(3))) == 3


def test_pack_writes_what_packb_writes_after_refusals_and_on_other_threads() -> None:
    import threading

    values: list[Any] = [["send", 1, "q", b"x" * 100, 0, None, None, 0], {"a": [1.5, "é"]}, 7]

    def expected(value: Any) -> bytes:
        return bytes(msgpack.packb(value, use_bin_type=True))

    for bad in ([1, object()], [1, 2**70], ["\ud800"], b"x" * 100):
        with pytest.raises(InvalidArgument):
            pack(bad, size_max=50)  # the reused encoder keeps nothing of a refused value
        for value in values:
            assert pack(value) == expected(value)
    seen: list[bool] = []

    def other() -> None:
        seen.append(all(pack(v) == expected(v) for v in values * 200))

    threads = [threading.Thread(target=other) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [True] * 4
