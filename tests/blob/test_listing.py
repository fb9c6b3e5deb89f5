"""Listing pages, name rules and ranges against brute-force computations."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.blob.listing import (
    check_bucket_name,
    check_key,
    check_metadata,
    list_keys,
    resolve_range,
)
from blocks.core.errors import InvalidArgument

_KEY = st.lists(st.sampled_from(["a", "b", "/", ".", "é"]), min_size=1, max_size=4).map("".join)


def _brute_force(keys: list[str], prefix: str, delimiter: str, after: str) -> list[str]:
    """Every entry of the full listing in order: keys and rolled-up prefixes, tagged."""
    entries: list[str] = []
    for key in sorted(keys):
        if not key.startswith(prefix) or key <= after:
            continue
        cut = key.find(delimiter, len(prefix)) if delimiter else -1
        entry = "p:" + key[: cut + len(delimiter)] if cut >= 0 else "k:" + key
        if entry not in entries:
            entries.append(entry)
    return entries


@given(
    keys=st.lists(_KEY, unique=True, max_size=25),
    prefix=st.sampled_from(["", "a", "a/", "b", "é"]),
    delimiter=st.sampled_from(["", "/", ".", "a/"]),
    max_keys=st.integers(1, 4),
    after=st.sampled_from(["", "a", "a/", "b/a"]),
)
def test_pages_concatenate_to_the_full_listing(
    keys: list[str], prefix: str, delimiter: str, max_keys: int, after: str
) -> None:
    ordered = sorted(keys)
    got: list[str] = []
    token = None
    for _ in range(len(keys) + 2):
        page = list_keys(
            ordered,
            prefix=prefix,
            delimiter=delimiter,
            max_keys=max_keys,
            start_after=after,
            continuation_token=token,
        )
        assert len(page.keys) + len(page.common_prefixes) <= max_keys
        # Within a page keys and prefixes interleave; order them as S3 would.
        entries = sorted(
            [("k:" + k, k) for k in page.keys] + [("p:" + p, p) for p in page.common_prefixes],
            key=lambda item: item[1],
        )
        got += [tag for tag, _ in entries]
        if not page.is_truncated:
            assert page.next_token is None
            break
        assert page.next_token
        token = page.next_token
    else:
        raise AssertionError("listing did not finish")
    assert got == _brute_force(keys, prefix, delimiter, after)


def test_a_key_equal_to_a_rolled_prefix_is_not_listed_twice() -> None:
    keys = ["a/", "a/b", "a/c", "b"]
    first = list_keys(keys, delimiter="/", max_keys=1)
    assert first.common_prefixes == ("a/",) and first.is_truncated
    second = list_keys(keys, delimiter="/", max_keys=1, continuation_token=first.next_token)
    assert second.keys == ("b",) and not second.is_truncated


@pytest.mark.parametrize("token", ["", "!!!", "eA==", "//8="])
def test_bad_tokens_are_invalid_argument(token: str) -> None:
    with pytest.raises(InvalidArgument):
        list_keys(["a"], continuation_token=token or "x")


def test_max_keys_bounds() -> None:
    assert list_keys(["a", "b"], max_keys=0).keys == ()
    for bad in (-1, 1001):
        with pytest.raises(InvalidArgument):
            list_keys(["a"], max_keys=bad)


@given(size=st.integers(0, 50), first=st.integers(-60, 60), last=st.integers(-1, 80))
def test_ranges_match_slicing(size: int, first: int, last: int) -> None:
    data = bytes(range(size))
    if first < 0:
        last = -1
    try:
        start, stop = resolve_range((first, last), size)
    except InvalidArgument:
        assert first >= size or (first >= 0 and last < first) or (first < 0 and size == 0)
        return
    expected = data[first:] if first < 0 else data[first : last + 1]
    assert data[start:stop] == expected and expected


@pytest.mark.parametrize(
    "name", ["", "ab", "a" * 64, "Abc", "-abc", "abc-", "a..b", "192.168.1.1", "a_b", 7]
)
def test_bad_bucket_names(name: object) -> None:
    with pytest.raises(InvalidArgument):
        check_bucket_name(name)


@pytest.mark.parametrize("name", ["abc", "a" * 63, "my.bucket-1", "0ab"])
def test_good_bucket_names(name: str) -> None:
    assert check_bucket_name(name) == name


@pytest.mark.parametrize("key", ["", "a" * 1025, "é" * 513, "a\x00b", b"bytes", "\ud800"])
def test_bad_keys(key: object) -> None:
    with pytest.raises(InvalidArgument):
        check_key(key)


def test_metadata_rules() -> None:
    assert check_metadata({"Color": "blue"}) == {"color": "blue"}
    for bad in ({"a b": "x"}, {"x": "line\nbreak"}, {"x": "y" * 3000}, {"x": 1}, ["x"]):
        with pytest.raises(InvalidArgument):
            check_metadata(bad)  # type: ignore[arg-type]
