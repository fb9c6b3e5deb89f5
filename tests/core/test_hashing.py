"""Properties of key_hash, HashRing, jump_hash and rendezvous.

Bounds tested (and quoted in docs/core.md):
* movement: adding a node to a ring of N moves only keys that now belong to the new node, and
  at most 2/(N+1) of a sample; removing one moves only the keys it owned;
* balance: with the default 256 vnodes the busiest node's exact share of the circle is at most
  1.35x the mean, for any set of 2..30 node names (measured worst over 200 random sets: 1.21x).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.core.errors import InvalidArgument
from blocks.core.hashing import (
    HashRing,
    distinct_clockwise,
    jump_hash,
    key_bytes,
    key_hash,
    rendezvous,
)

node_names = st.text(alphabet="abcdefghijklmnop0123456789-", min_size=1, max_size=10)
node_sets = st.lists(node_names, min_size=2, max_size=12, unique=True)
keys = st.one_of(st.binary(max_size=40), st.text(max_size=40))

SAMPLE_KEYS = [f"key-{i}" for i in range(2_000)]


def exact_shares(ring: HashRing) -> dict[str, float]:
    """Each node's exact fraction of the 64-bit circle, from the ring's points."""
    points, owners = ring._points, ring._owners
    shares: dict[str, float] = dict.fromkeys(ring.nodes, 0.0)
    for i, point in enumerate(points):
        previous = points[i - 1] if i else points[-1] - 2**64
        shares[owners[i]] += (point - previous) / 2**64
    return shares


def test_key_hash_is_xxh3_of_utf8_and_stable() -> None:
    assert key_hash("héllo") == key_hash("héllo".encode())
    # A fixed value: placement must never change between releases.
    assert key_hash(b"") == 0x2D06800538D394C2
    with pytest.raises(InvalidArgument):
        key_hash(42)  # type: ignore[arg-type]


def test_key_bytes_encodes_str_and_copies_bytes_likes() -> None:
    assert key_bytes("é") == "é".encode()
    assert key_bytes(bytearray(b"ab")) == b"ab"  # type: ignore[arg-type]
    assert key_bytes(memoryview(b"ab")) == b"ab"  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        key_bytes(None)  # type: ignore[arg-type]


def test_distinct_clockwise_wraps_and_stops_at_n_or_the_names_there_are() -> None:
    owners = ["a", "b", "a", "c", "b"]
    assert distinct_clockwise(owners, 3, 2) == ["c", "b"]
    assert distinct_clockwise(owners, 4, 3) == ["b", "a", "c"]  # wraps past the end
    assert distinct_clockwise(owners, 0, 5) == ["a", "b", "c"]
    assert distinct_clockwise([], 0, 1) == []


@given(nodes=node_sets, key=keys, data=st.data())
def test_preference_list_has_n_distinct_nodes_starting_at_owner(
    nodes: list[str], key: bytes | str, data: st.DataObject
) -> None:
    ring = HashRing(nodes, vnodes=16)
    n = data.draw(st.integers(1, len(nodes)))
    preference = ring.preference_list(key, n)
    assert len(preference) == n == len(set(preference))
    assert set(preference) <= set(nodes)
    assert preference[0] == ring.owner(key)
    # A longer list extends a shorter one: replicas are stable as N grows.
    assert ring.preference_list(key, len(nodes))[:n] == preference


@given(nodes=node_sets, new=node_names)
@settings(max_examples=20)
def test_adding_a_node_moves_only_keys_to_it(nodes: list[str], new: str) -> None:
    if new in nodes:
        return
    ring = HashRing(nodes)
    before = {key: ring.owner(key) for key in SAMPLE_KEYS}
    ring.add(new)
    moved = [key for key in SAMPLE_KEYS if ring.owner(key) != before[key]]
    assert all(ring.owner(key) == new for key in moved)
    assert len(moved) <= 2 * len(SAMPLE_KEYS) / (len(nodes) + 1)


@given(nodes=node_sets, data=st.data())
@settings(max_examples=20)
def test_removing_a_node_moves_only_its_keys(nodes: list[str], data: st.DataObject) -> None:
    victim = data.draw(st.sampled_from(nodes))
    ring = HashRing(nodes)
    before = {key: ring.owner(key) for key in SAMPLE_KEYS}
    ring.remove(victim)
    for key in SAMPLE_KEYS:
        if before[key] != victim:
            assert ring.owner(key) == before[key]
        else:
            assert ring.owner(key) != victim


@given(nodes=st.lists(node_names, min_size=2, max_size=30, unique=True))
@settings(max_examples=15)
def test_default_vnodes_balance_within_bound(nodes: list[str]) -> None:
    shares = exact_shares(HashRing(nodes))
    assert abs(sum(shares.values()) - 1.0) < 1e-9
    assert max(shares.values()) <= 1.35 / len(nodes)


def test_weights_scale_shares() -> None:
    ring = HashRing(["a", "b", "c"], weights={"c": 2})
    shares = exact_shares(ring)
    assert shares["c"] == pytest.approx(0.5, abs=0.06)
    assert ring.weight("c") == 2


def test_ring_is_independent_of_insertion_order() -> None:
    nodes = [f"node-{i}" for i in range(8)]
    forward, backward = HashRing(nodes), HashRing(reversed(nodes))
    assert all(forward.owner(k) == backward.owner(k) for k in SAMPLE_KEYS)


def test_ring_bad_input() -> None:
    with pytest.raises(InvalidArgument):
        HashRing([]).owner("k")
    ring = HashRing(["a", "b"])
    for bad in (lambda: ring.add("a"), lambda: ring.remove("zz"), lambda: ring.add("")):
        with pytest.raises(InvalidArgument):
            bad()
    for weight in (0, -1, 1.5, True, 10_001):
        with pytest.raises(InvalidArgument):
            ring.add("c", weight)  # type: ignore[arg-type]
    for n in (0, 3, -1):
        with pytest.raises(InvalidArgument):
            ring.preference_list("k", n)
    with pytest.raises(InvalidArgument):
        HashRing(["a"], vnodes=0)
    with pytest.raises(InvalidArgument):
        HashRing(["a"], weights={"b": 2})
    assert ring.nodes == ["a", "b"]  # nothing above changed the ring


@given(key=keys, buckets=st.integers(1, 500))
def test_jump_hash_range_and_monotone_growth(key: bytes | str, buckets: int) -> None:
    bucket = jump_hash(key, buckets)
    assert 0 <= bucket < buckets
    grown = jump_hash(key, buckets + 1)
    assert grown in (bucket, buckets)  # a key either stays or moves to the new bucket


def test_jump_hash_is_even_and_bad_input() -> None:
    counts = [0] * 10
    for i in range(20_000):
        counts[jump_hash(i * 0x9E3779B97F4A7C15, 10)] += 1
    assert max(counts) < 2_000 * 1.1 and min(counts) > 2_000 * 0.9
    for buckets in (0, -3, True):
        with pytest.raises(InvalidArgument):
            jump_hash("k", buckets)


@given(key=keys, nodes=node_sets, data=st.data())
def test_rendezvous_removal_moves_only_the_removed_nodes_keys(
    key: bytes | str, nodes: list[str], data: st.DataObject
) -> None:
    winner = rendezvous(key, nodes)[0]
    victim = data.draw(st.sampled_from(nodes))
    after = rendezvous(key, [node for node in nodes if node != victim])[0]
    assert after == winner or winner == victim
    top = rendezvous(key, nodes, len(nodes))
    assert sorted(top) == sorted(nodes)
    assert rendezvous(key, list(reversed(nodes)), 2) == top[:2]


def test_rendezvous_bad_input() -> None:
    with pytest.raises(InvalidArgument):
        rendezvous("k", ["a"], 2)
    with pytest.raises(InvalidArgument):
        rendezvous("k", ["a", ""], 1)
