"""The hot paths: mapped reads of data files, the record check, placement and digest caches,
and a single-replica put that leaves nothing pending."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from blocks.core.clock import ManualClock
from blocks.core.errors import Corruption
from blocks.core.hashing import HashRing, key_hash
from blocks.kv import Bitcask
from blocks.kv.cluster.anti_entropy import Digests, object_digest
from blocks.kv.cluster.hlc import HlcTimestamp, HybridLogicalClock
from blocks.kv.cluster.merkle import entry_hash
from blocks.kv.cluster.node import Fail, KVNodeCore, QuorumConfig, Reply
from blocks.kv.cluster.quorum import Placements
from blocks.kv.cluster.versions import VersionVector, update
from blocks.kv.engine.datafile import REMAP_BYTES_MIN
from blocks.kv.engine.format import HEADER, encode_record, record_value


@pytest.mark.parametrize("mmap_reads", [True, False], ids=["mmap", "pread"])
def test_reads_agree_through_growth_rotation_merge_and_reopen(
    tmp_path: Path, mmap_reads: bool
) -> None:
    expected: dict[bytes, bytes] = {}
    value_size = 1_000
    with Bitcask.open(
        tmp_path, sync="never", file_bytes_max=200_000, mmap_reads=mmap_reads
    ) as store:
        for round_number in range(3):
            # Enough bytes per round that the active file passes the remap threshold and
            # rotates; every round reads everything, old files and the active one.
            for index in range(3 * REMAP_BYTES_MIN // value_size):
                key = b"key-%d" % (index % 150)
                expected[key] = bytes([round_number + 1]) * value_size + key
                store.put(key, expected[key])
                if index % 7 == 0:  # a read right after a write: past the map of the tail
                    assert store.get(key) == expected[key]
            assert {k: store.get(k) for k in expected} == expected
            assert store.stats().files > 1
        store.merge()
        assert {k: store.get(k) for k in expected} == expected
        assert store.delete(b"key-0") is True
        assert store.get(b"key-0") is None
        del expected[b"key-0"]
    with Bitcask.open(tmp_path, sync="never", mmap_reads=mmap_reads) as store:
        assert {k: store.get(k) for k in expected} == expected


@pytest.mark.parametrize("mmap_reads", [True, False], ids=["mmap", "pread"])
def test_a_byte_flipped_under_a_live_map_is_caught(tmp_path: Path, mmap_reads: bool) -> None:
    value = b"x" * 1_000
    with Bitcask.open(tmp_path, sync="never", mmap_reads=mmap_reads) as store:
        count = 2 * REMAP_BYTES_MIN // len(value)
        for index in range(count):
            store.put(b"key-%d" % index, value)
        assert store.get(b"key-0") == value  # maps the active file when mmap_reads
        data_file = next(p for p in tmp_path.iterdir() if p.suffix == ".data")
        fd = os.open(data_file, os.O_WRONLY)
        try:  # damage the last byte of the first record's value behind the store's back
            os.pwrite(fd, b"y", HEADER.size + len(b"key-0") + len(value) - 1)
        finally:
            os.close(fd)
        with pytest.raises(Corruption):
            store.get(b"key-0")
        assert store.get(b"key-1") == value


def test_record_value_accepts_only_the_exact_live_record() -> None:
    record = encode_record(b"key", b"value", 7)
    assert record_value(record, b"key") == b"value"
    assert record_value(record, b"kex") is None  # another key
    assert record_value(record + b"!", b"key") is None  # lengths do not add up
    assert record_value(record[:10], b"key") is None  # shorter than a header
    assert record_value(encode_record(b"key", b"", 7, tombstone=True), b"key") is None
    damaged = bytearray(record)
    damaged[-1] ^= 1
    assert record_value(bytes(damaged), b"key") is None


def test_a_single_replica_put_is_done_when_answered() -> None:
    # With N=1 nothing else will answer: the request must not linger until its deadline,
    # where it would count against pending_max.
    core = KVNodeCore(
        "solo", QuorumConfig(1, 1, 1, pending_max=2), lambda k: ["solo"], ManualClock()
    )
    for request_id in range(1, 6):
        effects = core.coordinate_put(request_id, b"k%d" % request_id, b"v", VersionVector(), set())
        assert [type(e) for e in effects.replies] == [Reply] and not effects.messages, effects
    assert not [e for e in core.tick(set()).replies if isinstance(e, Fail)]


def test_placements_are_remembered_per_ring() -> None:
    placements = Placements()
    ring = HashRing(["a", "b", "c"])
    first = placements.of(ring, b"key", 3)
    assert first == ring.preference_list(b"key", 3)
    assert placements.of(ring, b"key", 3) is first
    other = HashRing(["a", "b", "c", "d"])
    assert placements.of(other, b"key", 4) == other.preference_list(b"key", 4)
    assert placements.of(HashRing(), b"key", 0) == []
    alone = HashRing(["a"])  # a one-node ring: one order for every key, no entry per key
    assert [placements.of(alone, k, 1) for k in (b"x", b"y")] == [["a"], ["a"]]
    assert placements.of(alone, b"x", 1) == alone.preference_list(b"x", 1)
    assert placements.of(ring, b"key", 3) == ring.preference_list(b"key", 3)


def test_tree_entries_are_recomputed_only_for_new_objects() -> None:
    digests = Digests()
    one = update(None, VersionVector(), "a", b"1", _timestamp())
    two = update(one, one.context, "a", b"2", _timestamp())
    for obj in (one, one, two):
        assert digests.entries([(b"k", obj)]) == [
            (b"k", key_hash(b"k"), entry_hash(b"k", object_digest(obj)))
        ]
    digests.forget_missing({})
    assert digests.entries([(b"k", two)])[0][2] == entry_hash(b"k", object_digest(two))


def _timestamp() -> HlcTimestamp:
    return HybridLogicalClock(ManualClock()).now()
