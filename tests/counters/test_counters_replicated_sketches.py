"""Replicated sketches and the counters store, in process: gossip pushes delivered many times
never double count (per-node Count-Min sketches, HyperLogLog register max), the wire codec
refuses damaged sketches, and a store replays its log after a crash without a snapshot."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.core.errors import PeerError
from blocks.counters.countmin import CountMinSketch
from blocks.counters.durable import CountersStore
from blocks.counters.hyperloglog import HyperLogLog
from blocks.counters.node import CountersNode
from blocks.counters.sketchstate import SketchReplica
from blocks.counters.sketchwire import countmin_from_wire, countmin_to_wire

NODES = ["n0", "n1", "n2"]
items = st.lists(st.sampled_from([b"a", b"b", b"c", b"d", b"e", b"f"]), max_size=30)


def _replicas() -> dict[str, SketchReplica]:
    return {
        name: SketchReplica(
            name, NODES, rng=random.Random(k), top_k=8, hll_precision=6, cms_width=64, cms_depth=3
        )
        for k, name in enumerate(NODES)
    }


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(NODES), items), max_size=8),
    st.lists(st.tuples(st.sampled_from(NODES), st.sampled_from(NODES)), max_size=30),
)
def test_repeated_pushes_never_double_count(
    adds: list[tuple[str, list[bytes]]], deliveries: list[tuple[str, str]]
) -> None:
    replicas = _replicas()
    union_cms, union_hll = CountMinSketch(64, 3), HyperLogLog(6)
    pushes: dict[str, list[object]] = {name: [] for name in NODES}
    for node, batch in adds:
        replicas[node].add_frequent("w", batch)
        replicas[node].add_distinct("u", batch)
        for item in batch:
            union_cms.add(item)
        union_hll.add_many(batch)
        pushes[node].append(replicas[node].snapshot() | {"kind": "sketches"})
    # Arbitrary deliveries of old pushes (repeats included), then every node's full state to
    # every other node twice over: the result must equal the sketch of the union, once.
    for source, dest in deliveries:
        for push in pushes[source]:
            replicas[dest].handle_message(source, push)
    for _ in range(2):
        for source in NODES:
            state = replicas[source].snapshot() | {"kind": "sketches"}
            for dest in NODES:
                if dest != source:
                    replicas[dest].handle_message(source, state)
    for replica in replicas.values():
        expected = sorted(
            ((item, union_cms.estimate(item)) for item in {i for _, b in adds for i in b}),
            key=lambda pair: (-pair[1], pair[0]),
        )
        assert replica.top("w", 8) == expected  # every item a candidate: the whole ranking
        assert replica.count_distinct("u") == (union_hll.count() if adds else 0)


def test_tick_pushes_changed_names_first_and_bounded() -> None:
    replica = SketchReplica("n0", ["n1"], rng=random.Random(1))
    for k in range(20):
        replica.add_distinct(f"d{k}", [b"x"])
    first = replica.tick().messages
    assert len(first) == 1 and len(first[0][1]["distinct"]) == 8
    assert sorted(first[0][1]["distinct"]) == [f"d{k}" for k in range(8)]


def test_count_min_wire_round_trips_and_refuses_damage() -> None:
    sketch = CountMinSketch(64, 3, seed=7)
    for k in range(100):
        sketch.add(f"i{k % 9}".encode(), k % 4)
    back = countmin_from_wire(countmin_to_wire(sketch))
    assert back.total == sketch.total and back.width == 64 and back.depth == 3
    assert all(
        back.estimate(f"i{k}".encode()) == sketch.estimate(f"i{k}".encode()) for k in range(9)
    )
    wire = countmin_to_wire(sketch)
    for bad in (
        wire[:4],
        [*wire[:3], wire[3] + 1, wire[4]],  # rows no longer add up to the total
        [*wire[:4], wire[4][:-3]],
        [*wire[:4], b"not zlib"],
        [1 << 30, 1 << 10, 0, 0, wire[4]],
    ):
        with pytest.raises(PeerError):
            countmin_from_wire(bad)


def test_store_replays_its_log_after_a_crash_without_snapshot(tmp_path: Path) -> None:
    async def write() -> None:
        node = CountersNode("n0", [], rng=random.Random(0))
        store = CountersStore(str(tmp_path), node, fsync="always")
        store.open()
        for record in (["increment", "c", 5], ["increment", "c", -2],
                       ["distinct", "u", [b"a", b"b"]], ["frequent", "w", [b"x", b"x"]]):  # fmt: skip
            node.apply(record)
            await store.record(record)
        store.close(snapshot=False)  # a crash: no snapshot written

    asyncio.run(write())
    node = CountersNode("n0", [], rng=random.Random(0))
    store = CountersStore(str(tmp_path), node, fsync="always", snapshot_records=2)
    store.open()
    assert store.replayed == 4
    assert node.counters.value("c") == 3
    assert node.sketches.count_distinct("u") == 2
    assert node.sketches.top("w", 3) == [(b"x", 2)]
    assert store.maybe_snapshot()  # 4 records since the last snapshot >= 2
    store.close()
    again = CountersNode("n0", [], rng=random.Random(0))
    reopened = CountersStore(str(tmp_path), again, fsync="always")
    reopened.open()
    assert reopened.replayed == 0 and again.counters.value("c") == 3
    assert again.sketches.top("w", 3) == [(b"x", 2)]
    reopened.close()
