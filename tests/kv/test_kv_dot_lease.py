"""Dot counters are reserved durably ahead of use, so no dot ever names two writes.

A node whose copy of a key lost its newest writes (a power cut under ``sync=never``) used to
issue their dots again for different values; replicas that kept the old ones never converged.
"""

from __future__ import annotations

import asyncio
import random
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from blocks.core.errors import Corruption, InvalidArgument, StorageFull
from blocks.kv.client import Versioned
from blocks.kv.cluster.dot_lease import COUNTERS_PER_MS, COUNTERS_PER_RESERVATION, CounterLease
from blocks.kv.cluster.persist import (
    COUNTER_MARK_FILE,
    BitcaskObjectStore,
    ObjectStore,
    StoredRecord,
)
from blocks.kv.cluster.versions import COUNTER_MAX, VersionedObject, decode_context, encode_context
from blocks.kv.cluster.versions import VersionVector as Vector
from blocks.kv.local_cluster import LocalCluster
from blocks.testing.powerloss import PowerLossDisk

EMPTY_CONTEXT = Versioned.of(None).context


def test_a_lease_asks_for_a_mark_only_past_what_is_reserved() -> None:
    lease = CounterLease.resumed(10)
    assert (lease.floor, lease.reserved) == (10, 10)
    assert lease.mark_needed(11) == 11 + COUNTERS_PER_RESERVATION
    lease.reserved_to(11 + COUNTERS_PER_RESERVATION)
    assert lease.mark_needed(12) is None
    assert lease.mark_needed(11 + COUNTERS_PER_RESERVATION) is None
    assert lease.mark_needed(12 + COUNTERS_PER_RESERVATION) == 12 + 2 * COUNTERS_PER_RESERVATION
    assert CounterLease.resumed(COUNTER_MAX - 5).mark_needed(COUNTER_MAX) == COUNTER_MAX
    for bad in (-1, COUNTER_MAX + 1):
        with pytest.raises(InvalidArgument):
            CounterLease.resumed(bad)
    assert CounterLease.resumed(10, now_ms=3).floor == 3 * COUNTERS_PER_MS  # the clock floor
    assert CounterLease.resumed(5 * COUNTERS_PER_MS, now_ms=3).floor == 5 * COUNTERS_PER_MS


def test_a_context_counter_past_the_maximum_is_refused() -> None:
    assert decode_context(encode_context(Vector((("n1", COUNTER_MAX),)))).get("n1") == COUNTER_MAX
    with pytest.raises(InvalidArgument):
        decode_context(encode_context(Vector((("n1", COUNTER_MAX + 1),))))


def test_a_bitcask_store_keeps_its_mark_and_refuses_a_damaged_one(tmp_path: Path) -> None:
    store = BitcaskObjectStore(tmp_path, sync="never")
    assert store.counter_mark() == 0
    store.reserve_counters(123_456)
    store.close()
    store = BitcaskObjectStore(tmp_path, sync="never")
    assert store.counter_mark() == 123_456
    store.close()
    (tmp_path / COUNTER_MARK_FILE).write_bytes(b"12x\n")
    store = BitcaskObjectStore(tmp_path, sync="never")
    with pytest.raises(Corruption):
        store.counter_mark()
    store.close()


class CountingStore:
    """An ``ObjectStore`` that counts reservations, and refuses them while ``refuse`` is set."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.reservations: list[int] = []
        self.refuse = False

    def load(self) -> Iterator[tuple[bytes, VersionedObject, list[str]]]:
        return self.inner.load()

    def save(self, records: Iterable[StoredRecord]) -> None:
        self.inner.save(records)

    def counter_mark(self) -> int:
        return self.inner.counter_mark()

    def reserve_counters(self, mark: int) -> None:
        if self.refuse:
            raise StorageFull("storage full: reserving dot counters failed: test")
        self.reservations.append(mark)
        self.inner.reserve_counters(mark)

    def close(self) -> None:
        self.inner.close()


def test_one_reservation_serves_many_writes_and_a_restart_starts_above_it() -> None:
    asyncio.run(_many_writes())


async def _many_writes() -> None:
    async with LocalCluster(nodes=1, replicas=1, read_quorum=1, write_quorum=1) as cluster:
        node = cluster.node("n1")
        store = CountingStore(node.store)
        node.store = store
        client = cluster.client(timeout_s=5.0)
        counters = [(await client.write(b"hot", b"v%d" % i, None)).dot.counter for i in range(50)]
        counters.append((await client.write(b"cold", b"c", EMPTY_CONTEXT)).dot.counter)
        first = counters[0]  # just above the start's floor (from the clock)
        assert counters[:50] == list(range(first, first + 50)) and counters[50] == first
        assert store.reservations == [first + COUNTERS_PER_RESERVATION]
        await cluster.crash("n1")
        await cluster.restart("n1")  # the in-memory store, and its mark, survive a crash
        written = await client.write(b"hot", b"after", EMPTY_CONTEXT)
        assert written.dot.counter > store.reservations[0]
        assert written.obj.values == [b"v49", b"after"]  # concurrent with what it did not see
        assert store.reservations == [
            first + COUNTERS_PER_RESERVATION,
            written.dot.counter + COUNTERS_PER_RESERVATION,
        ]


def test_a_refused_reservation_fails_the_put_and_reads_go_on() -> None:
    asyncio.run(_refused_reservation())


async def _refused_reservation() -> None:
    async with LocalCluster(nodes=1, replicas=1, read_quorum=1, write_quorum=1) as cluster:
        node = cluster.node("n1")
        client = cluster.client(timeout_s=5.0)
        await client.put(b"saved", b"v1")
        await cluster.crash("n1")
        await cluster.restart("n1")
        store = CountingStore(node.store)
        node.store, store.refuse = store, True
        with pytest.raises(StorageFull):
            await client.put(b"saved", b"v2")
        assert node.storage.state == "full"
        assert (await client.get(b"saved")).value == b"v1"
        store.refuse = False
        await client.put(b"saved", b"v3")
        assert (await client.get(b"saved")).value == b"v3" and node.storage.state == "ok"


def test_a_power_cut_under_sync_never_never_reissues_a_dot(tmp_path: Path) -> None:
    asyncio.run(_power_cut(tmp_path))


async def _power_cut(root: Path) -> None:
    disk = PowerLossDisk(random.Random(7), torn_tail_probability=0.0)
    disk.track(root / "n1")
    cluster = LocalCluster(
        nodes=1, replicas=1, read_quorum=1, write_quorum=1, data_dir=root, sync="never"
    )
    with disk.installed():
        await cluster.start()
        try:
            client = cluster.client(timeout_s=5.0)
            lost = await client.write(b"k", b"lost", EMPTY_CONTEXT)
            with disk.power_cut(root / "n1"):
                await cluster.crash("n1")
            await cluster.restart("n1")
            assert (await client.get(b"k")).value is None, "the cut must drop the write"
            again = await client.write(b"k", b"again", EMPTY_CONTEXT)
            assert again.dot != lost.dot and again.dot.counter > lost.dot.counter
        finally:
            await cluster.stop()


def test_a_wiped_node_never_reissues_a_dot_its_peers_hold(tmp_path: Path) -> None:
    """A node restarted with an empty data directory under its old name has lost its mark
    too; its counters then start from its clock, above any it issued before."""
    asyncio.run(_wiped(tmp_path))


async def _wiped(root: Path) -> None:
    cluster = LocalCluster(nodes=3, data_dir=root, sync="always")
    await cluster.start()
    try:
        first = await cluster.node("n1").put(b"k", b"old", None, write_quorum=3)
        await cluster.crash("n1")
        shutil.rmtree(root / "n1")
        await cluster.restart("n1")
        second = await cluster.node("n1").put(b"k", b"new", Vector(), write_quorum=1)
        assert second.dot.counter > first.dot.counter, "the wiped node reissued a dot"
    finally:
        await cluster.stop()
