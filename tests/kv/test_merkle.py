"""Merkle trees: equal contents give equal roots; differing leaves are exactly the changes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.core.errors import InvalidArgument
from blocks.kv.cluster.merkle import MerkleTree, differing_leaves, leaf_of

contents = st.dictionaries(st.binary(max_size=6), st.binary(max_size=4), max_size=40)


@given(contents, st.randoms(use_true_random=False))
def test_root_does_not_depend_on_insertion_order(items: dict, rng) -> None:
    pairs = list(items.items())
    shuffled = pairs[:]
    rng.shuffle(shuffled)
    assert MerkleTree(6, pairs).root == MerkleTree(6, shuffled).root


@given(contents, contents)
def test_differing_leaves_are_exactly_the_leaves_of_changed_keys(left: dict, right: dict) -> None:
    depth = 5
    changed = {k for k in left.keys() | right.keys() if left.get(k) != right.get(k)}
    expected = {leaf_of(k, depth) for k in changed}
    found = set(differing_leaves(MerkleTree(depth, left.items()), MerkleTree(depth, right.items())))
    # XOR can cancel only by a 64-bit hash collision; treat a miss as a failure.
    assert found == expected


@given(contents, st.binary(max_size=6), st.binary(max_size=4), st.binary(max_size=4))
def test_replace_is_the_same_as_rebuilding(items: dict, key: bytes, old: bytes, new: bytes) -> None:
    items = {**items, key: old}
    tree = MerkleTree(4, items.items())
    tree.replace(key, old, new)
    assert tree.root == MerkleTree(4, {**items, key: new}.items()).root
    tree.replace(key, new, None)
    rest = {k: v for k, v in items.items() if k != key}
    assert tree.root == MerkleTree(4, rest.items()).root


def test_leaf_ranges_tile_the_hash_space_and_bad_depths_are_refused() -> None:
    tree = MerkleTree(3)
    ranges = [tree.leaf_range(i) for i in range(8)]
    assert ranges[0][0] == 0 and ranges[-1][1] == 1 << 64
    assert all(ranges[i][1] == ranges[i + 1][0] for i in range(7))
    with pytest.raises(InvalidArgument):
        MerkleTree(21)
    with pytest.raises(InvalidArgument):
        differing_leaves(MerkleTree(2), MerkleTree(3))
