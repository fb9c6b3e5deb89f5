"""Erasure coding: round trips, losing or rotting any m shards, and more than m."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.blob import ChunkStore, LocalBlobStore, MemoryShardStore, ReedSolomonCodec
from blocks.blob.storage.erasure import (
    SHARD_HEADER_BYTES,
    ReplicationCodec,
    build_shard,
    chunk_id_of,
    codec_from_spec,
    parse_shard,
)
from blocks.core.errors import Corruption, InvalidArgument, Unavailable

K, M = 4, 2


def _cluster(k: int = K, m: int = M) -> tuple[ChunkStore, dict[str, MemoryShardStore]]:
    nodes = {f"n{i}": MemoryShardStore(f"n{i}") for i in range(k + m)}
    return ChunkStore(nodes, ReedSolomonCodec(k, m)), nodes


def _all_shards_good(store: ChunkStore, nodes: dict[str, MemoryShardStore], chunk_id: str) -> bool:
    for index, node in enumerate(store.locate(chunk_id)):
        raw = nodes[node].get_shard(chunk_id, index)
        if raw is None or parse_shard(raw, chunk_id) is None:
            return False
    return True


@given(data=st.binary(max_size=3000), chunk_bytes=st.sampled_from([1, 7, 256, 4096]))
@settings(max_examples=30)
def test_round_trip_of_arbitrary_bytes(data: bytes, chunk_bytes: int) -> None:
    store = LocalBlobStore(chunk_bytes=chunk_bytes, inline_bytes_max=0)
    store.create_bucket("bkt")
    info = store.put_object("bkt", "k", data)
    assert info.size == len(data)
    assert store.get_object("bkt", "k")[1] == data
    assert len(store.ledger.referenced()) == len(
        {data[i : i + chunk_bytes] for i in range(0, len(data), chunk_bytes)}
    )


def test_shards_land_on_distinct_nodes() -> None:
    store, _ = _cluster()
    for n in range(50):
        locations = store.locate(chunk_id_of(str(n).encode()))
        assert len(set(locations)) == K + M


@given(
    data=st.binary(min_size=0, max_size=2000),
    damaged=st.sets(st.integers(0, K + M - 1), max_size=M),
    how=st.sampled_from(["drop", "corrupt", "down"]),
    position=st.integers(0, 100_000),
)
@settings(max_examples=40)
def test_any_m_damaged_shards_read_right_and_are_repaired(
    data: bytes, damaged: set[int], how: str, position: int
) -> None:
    store, nodes = _cluster()
    chunk_id = store.write(data)
    locations = store.locate(chunk_id)
    for index in damaged:
        node = nodes[locations[index]]
        if how == "drop":
            node.drop(chunk_id, index)
        elif how == "down":
            node.down = True
        else:
            node.corrupt(chunk_id, index, position)
    assert store.read(chunk_id) == data
    if how != "down":  # a read visits every data shard and rewrites the bad ones
        for index, node_name in enumerate(locations[:K]):
            raw = nodes[node_name].get_shard(chunk_id, index)
            assert raw is not None and parse_shard(raw, chunk_id) is not None
    # verify() reads every shard, so it repairs parity that a plain read never looks at.
    result = store.verify(chunk_id)
    assert not result.lost
    for node in nodes.values():
        node.down = False
    if how != "down":
        assert _all_shards_good(store, nodes, chunk_id)
    assert store.read(chunk_id) == data


@pytest.mark.parametrize("lost", list(itertools.combinations(range(K + M), M + 1)))
def test_more_than_m_lost_is_a_clear_error(lost: tuple[int, ...]) -> None:
    store, nodes = _cluster()
    data = bytes(range(256)) * 9
    chunk_id = store.write(data)
    locations = store.locate(chunk_id)
    for index in lost:
        nodes[locations[index]].corrupt(chunk_id, index)
    with pytest.raises(Corruption):
        store.read(chunk_id)
    assert store.verify(chunk_id).lost


def test_more_than_m_nodes_down_is_unavailable() -> None:
    store, nodes = _cluster()
    chunk_id = store.write(b"payload" * 100)
    for name in store.locate(chunk_id)[: M + 1]:
        nodes[name].down = True
    with pytest.raises(Unavailable):
        store.read(chunk_id)


def test_scrub_repairs_rotten_parity_through_the_store() -> None:
    nodes = {f"n{i}": MemoryShardStore(f"n{i}") for i in range(K + M)}
    blob = LocalBlobStore(nodes=nodes, chunk_bytes=100, inline_bytes_max=0)
    blob.create_bucket("bkt")
    blob.put_object("bkt", "k", bytes(range(250)))
    chunk_ids = blob.ledger.referenced()
    for chunk_id in chunk_ids:
        parity = K  # the first parity shard: healthy reads never touch it
        nodes[blob.chunks.locate(chunk_id)[parity]].corrupt(chunk_id, parity)
    report = blob.scrub()
    assert (report.chunks_checked, report.shards_repaired, report.chunks_lost) == (3, 3, 0)
    assert all(_all_shards_good(blob.chunks, nodes, c) for c in chunk_ids)
    assert blob.scrub().shards_repaired == 0


def test_replication_survives_all_but_one_copy() -> None:
    nodes = {f"n{i}": MemoryShardStore(f"n{i}") for i in range(3)}
    store = ChunkStore(nodes, ReplicationCodec(3))
    chunk_id = store.write(b"abc" * 50)
    locations = store.locate(chunk_id)
    nodes[locations[0]].corrupt(chunk_id, 0)
    nodes[locations[1]].drop(chunk_id, 1)
    assert store.read(chunk_id) == b"abc" * 50
    assert _all_shards_good(store, nodes, chunk_id)


@given(raw=st.binary(max_size=200))
def test_parse_shard_never_raises_on_garbage(raw: bytes) -> None:
    assert parse_shard(raw) is None or len(raw) >= SHARD_HEADER_BYTES


@given(data=st.binary(max_size=300), position=st.integers(0, 10_000))
def test_any_flipped_byte_is_detected(data: bytes, position: int) -> None:
    codec = ReedSolomonCodec(K, M)
    chunk_id = chunk_id_of(data)
    raw = build_shard(codec, 1, len(data), chunk_id, codec.encode(data)[1])
    assert parse_shard(raw, chunk_id) is not None
    flipped = bytearray(raw)
    flipped[position % len(raw)] ^= 0x01
    assert parse_shard(bytes(flipped), chunk_id) is None
    assert parse_shard(raw + b"x", chunk_id) is None
    assert parse_shard(raw[:-1], chunk_id) is None
    assert parse_shard(raw, chunk_id_of(data + b"other")) is None


def test_codec_specs() -> None:
    assert codec_from_spec("rs:4+2").spec() == "rs:4+2"
    assert codec_from_spec("replicate:3").spec() == "replicate:3"
    for bad in ("rs:4", "rs:0+2", "rs:30+3", "replicate:0", "zz:1", "rs:a+b"):
        with pytest.raises(InvalidArgument):
            codec_from_spec(bad)
