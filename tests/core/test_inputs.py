"""``blocks.core.inputs``: the bytes-within-a-limit check that the log and kv share."""

from __future__ import annotations

import pytest

from blocks.core.errors import InvalidArgument
from blocks.core.inputs import bytes_within
from blocks.core.log.config import as_payload
from blocks.kv.limits import check_value


@pytest.mark.parametrize("value", [b"abc", bytearray(b"abc"), memoryview(b"abc")])
def test_bytes_like_within_the_limit_comes_back_as_bytes(value: object) -> None:
    data = bytes_within(value, "thing", 3)
    assert data == b"abc" and type(data) is bytes


def test_bytes_are_returned_without_a_copy() -> None:
    value = b"x" * 10
    assert bytes_within(value, "thing", 10) is value


@pytest.mark.parametrize("value", ["abc", 3, None, [1, 2]])
def test_other_types_are_refused_by_name(value: object) -> None:
    with pytest.raises(InvalidArgument, match=f"thing must be bytes, got {type(value).__name__}"):
        bytes_within(value, "thing", 100)


def test_one_byte_over_the_limit_is_refused() -> None:
    assert bytes_within(b"", "thing", 0) == b""
    with pytest.raises(InvalidArgument, match="thing of 5 bytes exceeds the limit of 4"):
        bytes_within(b"12345", "thing", 4)
    with pytest.raises(InvalidArgument, match=r"exceeds the limit of 4 \(thing_bytes_max\)$"):
        bytes_within(b"12345", "thing", 4, "thing_bytes_max")


def test_the_log_and_kv_checks_are_this_one() -> None:
    for check, what in ((as_payload, "a log record"), (check_value, "value")):
        assert check(bytearray(b"ab"), 2) == b"ab"
        with pytest.raises(InvalidArgument, match=f"{what} of 3 bytes exceeds"):
            check(b"abc", 2)
        with pytest.raises(InvalidArgument, match=f"{what} must be bytes, got str"):
            check("ab", 2)
