"""``blocks.core.writer_entries``: per-writer entries merged from a value's siblings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.core.codec import pack
from blocks.core.errors import Corruption, InvalidArgument
from blocks.core.writer_entries import encode_entries, keep_latest, merge_siblings

_entries = st.dictionaries(
    st.sampled_from("abcd"), st.tuples(st.integers(0, 5), st.integers(-9, 9)), max_size=4
)


def _merge(*siblings: dict[str, tuple[int, int]]) -> dict[str, tuple[int, ...]]:
    encoded = [pack({writer: list(entry) for writer, entry in s.items()}) for s in siblings]
    return merge_siblings(encoded, width=2, writers_max=4, value_bytes_max=1 << 10, what="shard")


def test_each_writer_keeps_its_highest_sequence_and_a_tie_keeps_the_first() -> None:
    merged = _merge({"a": (1, 10), "b": (5, 1)}, {"a": (2, 20), "b": (5, 99), "c": (0, 3)})
    assert merged == {"a": (2, 20), "b": (5, 1), "c": (0, 3)}
    into = {"a": (3, 0)}
    assert keep_latest(into, {"a": (2, 7), "b": (1, 1)}) is into
    assert into == {"a": (3, 0), "b": (1, 1)}


@given(st.lists(_entries, max_size=4))
def test_the_merge_is_the_same_in_any_order_and_when_repeated(
    siblings: list[dict[str, tuple[int, int]]],
) -> None:
    merged = _merge(*siblings)
    for writer, entry in merged.items():  # the highest sequence seen for each writer
        assert entry[0] == max(s[writer][0] for s in siblings if writer in s)
    # Order and repetition matter only between entries of equal sequence (a tie keeps the
    # first), which a writer never writes twice; compare sequences only.
    sequences = {writer: entry[0] for writer, entry in merged.items()}
    again = _merge(*reversed(siblings), *siblings)
    assert {writer: entry[0] for writer, entry in again.items()} == sequences


@given(_entries)
def test_encoded_entries_decode_to_themselves_in_writer_order(
    entries: dict[str, tuple[int, int]],
) -> None:
    encoded = encode_entries(entries, 1 << 10)
    assert encoded == encode_entries(dict(reversed(entries.items())), 1 << 10)
    decoded = merge_siblings([encoded], width=2, writers_max=4, value_bytes_max=1 << 10, what="x")
    assert decoded == entries
    assert list(decoded) == sorted(entries)


def test_an_encoding_over_the_limit_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        encode_entries({"a" * 80: (1, 2)}, 64)


def test_a_value_at_the_writer_and_byte_limits_is_accepted() -> None:
    full = pack({writer: [1, 2] for writer in "abcd"})
    assert len(full) <= 64
    merged = merge_siblings([full], width=2, writers_max=4, value_bytes_max=64, what="shard")
    assert merged == {writer: (1, 2) for writer in "abcd"}


@pytest.mark.parametrize(
    "bad",
    [
        b"\xc1",  # not msgpack
        pack({"a": [1, 2]}) + b"x",  # trailing bytes
        pack([1, 2]),  # not a map
        pack({"a": [1]}),  # wrong width
        pack({"a": [1, "2"]}),  # not ints
        pack({"a": [1, True]}),  # a bool is not an int here
        pack({1: [1, 2]}),  # writer not a str
        pack({writer: [1, 2] for writer in "abcde"}),  # more writers than writers_max
        pack({"a" * 80: [1, 2]}),  # longer than value_bytes_max
    ],
)
def test_stored_data_that_does_not_decode_is_corruption(bad: bytes) -> None:
    siblings = [pack({"ok": [1, 1]}), bad]
    with pytest.raises(Corruption, match="shard does not decode"):
        merge_siblings(siblings, width=2, writers_max=4, value_bytes_max=64, what="shard")
