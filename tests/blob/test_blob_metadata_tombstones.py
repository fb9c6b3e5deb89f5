"""Replicated metadata (#15 item 2): what a node missed while it was away stays gone after it
syncs. A bucket deleted, or a multipart upload completed or aborted, while a node was away
is not brought back by that node's snapshot, and the node drops it when it pulls a peer's;
the tombstones survive compaction and journal replay (``MetaIndex.apply``)."""

from __future__ import annotations

import pytest

from blocks.blob.cluster.replica import TOMBSTONES_MAX, ReplicatedBlobStore
from blocks.blob.storage.index import MetaIndex
from blocks.blob.storage.records import decode
from blocks.blob.storage.shards import MemoryShardStore, ShardStore
from blocks.core.clock import ManualClock
from blocks.core.errors import NotFound

from .test_blob_metadata_replication import Recorder, _replica


@pytest.fixture
def shards() -> dict[str, ShardStore]:
    return {name: MemoryShardStore(name) for name in ("x", "y", "z")}


def _sync(into: ReplicatedBlobStore, source: ReplicatedBlobStore) -> None:
    """One sync round as ``Replicator.sync_once`` runs it: ``source``'s snapshot applied."""
    for record in source.snapshot_records():
        try:
            into.apply_remote(record)
        except NotFound:
            continue


def _replayed(store: ReplicatedBlobStore) -> MetaIndex:
    """The index compaction and a restart would rebuild from ``store``'s snapshot."""
    index = MetaIndex(tombstones_max=TOMBSTONES_MAX)
    for record in store.snapshot_records():
        index.apply(decode(record))
    return index


def test_a_bucket_deleted_while_a_node_was_away_stays_deleted(
    shards: dict[str, ShardStore],
) -> None:
    clock = ManualClock(1_000_000)
    a, b, c = (_replica(name, shards, clock) for name in "abc")
    a.replicator = Recorder(b, c)
    a.create_bucket("gone")
    a.create_bucket("kept")
    clock.advance(1)
    a.replicator = Recorder(b)  # c is away
    a.delete_bucket("gone")
    assert "gone" in c.index.buckets
    for into, source in ((a, c), (b, c), (c, a), (c, b)):  # c back: syncs both ways
        _sync(into, source)
    for node in (a, b, c):
        assert sorted(node.index.buckets) == ["kept"], node.node_id
        assert "gone" not in _replayed(node).buckets
    _sync(a, c)  # c's next snapshot brings nothing back either
    assert "gone" not in a.index.buckets

    clock.advance(1)  # the name may be used again: the new bucket reaches every node
    a.replicator = Recorder(b, c)
    a.create_bucket("gone")
    for node in (b, c):
        assert "gone" in node.index.buckets
    d = _replica("d", shards, clock)
    _sync(d, c)
    assert sorted(d.index.buckets) == ["gone", "kept"]


def test_uploads_finished_while_a_node_was_away_are_not_listed_there(
    shards: dict[str, ShardStore],
) -> None:
    clock = ManualClock(1_000_000)
    a, b, c = (_replica(name, shards, clock) for name in "abc")
    a.replicator = Recorder(b, c)
    a.create_bucket("bkt")
    completed = a.create_multipart_upload("bkt", "done")
    part = a.upload_part("bkt", "done", completed, 1, b"p" * 2000)
    aborted = a.create_multipart_upload("bkt", "dropped")
    a.upload_part("bkt", "dropped", aborted, 1, b"q" * 2000)
    open_upload = a.create_multipart_upload("bkt", "open")
    assert len(c.list_multipart_uploads("bkt")) == 3
    clock.advance(1)
    a.replicator = Recorder(b)  # c is away
    a.complete_multipart_upload("bkt", "done", completed, [(1, part.etag)])
    a.abort_multipart_upload("bkt", "dropped", aborted)
    for into, source in ((a, c), (b, c), (c, a), (c, b)):  # c back: syncs both ways
        _sync(into, source)
    for node in (a, b, c):
        listed = [u.upload_id for u in node.list_multipart_uploads("bkt")]
        assert listed == [open_upload], node.node_id
        assert list(_replayed(node).uploads) == [open_upload], node.node_id
    assert c.get_object("bkt", "done")[1] == b"p" * 2000
    with pytest.raises(NotFound):
        c.list_parts("bkt", "dropped", aborted)
