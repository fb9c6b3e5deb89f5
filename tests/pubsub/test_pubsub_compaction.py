"""Durable compaction by key and tail truncation of a partition on disk, against a list model."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.core.errors import FailedPrecondition
from blocks.pubsub.local import LocalBroker
from blocks.pubsub.partition import LogPartition, MemoryPartition, PartitionStore
from blocks.pubsub.record import StoredRecord

KEYS = st.one_of(st.none(), st.sampled_from([b"a", b"b", b"c"]))
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.lists(st.tuples(KEYS, st.binary(max_size=20)), max_size=4)),
        st.tuples(st.just("compact"), st.none()),
        st.tuples(st.just("commit"), st.none()),
        st.tuples(st.just("truncate"), st.integers(0, 40)),
        st.tuples(st.just("reopen"), st.none()),
    ),
    max_size=25,
)


def _read_all(store: PartitionStore, *, include_control: bool = False) -> list[StoredRecord]:
    return store.read(0, 10_000, 1 << 30, include_control=include_control)


def _check(store: PartitionStore, model: list[StoredRecord], durable: bool) -> None:
    """Offsets never change; the newest record of each key and every keyless record are
    there as written; an older record of a key is either there as written or gone."""
    assert store.next_offset == len(model)
    newest = {r.key: r.offset for r in model if r.key is not None}
    data = _read_all(store)
    by_offset = {r.offset: r for r in data}
    assert [r.offset for r in data] == sorted(by_offset)
    for record in model:
        if record.key is None or newest[record.key] == record.offset:
            assert by_offset.get(record.offset) == record
        elif record.offset in by_offset:
            assert by_offset[record.offset] == record
    assert set(by_offset) <= {r.offset for r in model}
    if durable:  # on disk, compaction leaves hollow records in place of the old ones
        every = _read_all(store, include_control=True)
        assert [r.offset for r in every] == list(range(len(model)))  # hollow records keep offsets


@pytest.mark.parametrize("durable", [False, True])
@settings(deadline=None)
@given(steps=STEPS)
def test_compaction_and_truncation_match_the_model(durable: bool, steps: list[Any]) -> None:
    directory = tempfile.mkdtemp(prefix="pubsub-compaction-")
    try:

        def open_store() -> PartitionStore:
            if durable:
                return LogPartition(directory, fsync="never", segment_bytes_max=120)
            return MemoryPartition()

        store = open_store()
        model: list[StoredRecord] = []
        committed = 0  # as in a replica: only committed records supersede, and stay
        for step in steps:
            action, argument = step[0], step[1]
            if action == "append" and argument:
                batch = [
                    StoredRecord(len(model) + i, 1000 + len(model) + i, key, value, "p", 0)
                    for i, (key, value) in enumerate(argument)
                ]
                store.append(batch)
                model.extend(batch)
            elif action == "compact":
                store.compact(committed)
            elif action == "commit":
                committed = len(model)
            elif action == "truncate":
                cut = max(argument, committed)
                store.truncate_after(cut)
                del model[cut:]
            elif action == "reopen" and durable:
                store.close()
                store = open_store()
            _check(store, model, durable)
        store.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_durable_compaction_survives_restart_and_keeps_dedup(tmp_path: Path) -> None:
    async def main() -> None:
        broker = LocalBroker(tmp_path, fsync="never", segment_bytes_max=150)
        await broker.create_topic("state", compact=True)
        await broker.create_topic("plain")
        for i in range(30):
            key = b"k%d" % (i % 3)
            await broker.produce_batch("state", 0, [(key, b"v%d" % i)], producer_id="p", sequence=i)
        removed = broker.compact("state")
        assert 0 < removed <= 27
        with pytest.raises(FailedPrecondition):
            broker.compact("plain")
        await broker.close()

        broker = LocalBroker(tmp_path, fsync="never", segment_bytes_max=150)
        records = await broker.fetch("state", 0, 0, 1000)
        latest = {r.key: r.value for r in records}
        assert latest == {b"k0": b"v27", b"k1": b"v28", b"k2": b"v29"}
        assert len(records) == 30 - removed
        # a retry of a compacted-away batch is still recognised as a duplicate
        assert await broker.produce_batch("state", 0, [(b"k0", b"v0")], producer_id="p") == 0
        assert (await broker.end_offsets("state", 0))[1] == 30
        await broker.close()

    asyncio.run(main())
