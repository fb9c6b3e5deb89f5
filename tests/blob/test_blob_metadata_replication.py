"""Replicated metadata in process (#15 item 2): records a node commits reach its peers and
serve reads there; a key's changes converge whatever order they arrive in (versions and
tombstones); a snapshot brings an empty replica up to date; a reference count reaching zero
deletes nothing; the cluster collector deletes only what every node agrees nobody
references, once marked for the grace period."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from blocks.blob.cluster.gc import ClusterCollector
from blocks.blob.cluster.node import open_node, open_replica
from blocks.blob.cluster.peer_protocol import ShardHost, serve_message
from blocks.blob.cluster.replica import ReplicatedBlobStore
from blocks.blob.cluster.replication import Replicator
from blocks.blob.conditions import ConditionFailed, WriteCondition
from blocks.blob.storage.shards import DirectoryShardStore, MemoryShardStore, ShardStore
from blocks.core.clock import ManualClock
from blocks.core.errors import (
    Corruption,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)


class Recorder:
    """A replicator stand-in: keeps every record pushed, and hands them to ``peers``."""

    def __init__(self, *peers: ReplicatedBlobStore) -> None:
        self.records: list[bytes] = []
        self.peers = peers

    def replicate(self, records: list[bytes]) -> None:
        self.records += records
        for peer in self.peers:
            for record in records:
                peer.apply_remote(record)

    def catch_up_key(self, bucket: str, key: str) -> bool:
        return False

    def read_bucket(self, bucket: str) -> Callable[[], None]:
        return lambda: None  # every push reached every replica


class Lagging:
    """A replicator whose pushes never reach this node's peer; ``catch_up_key`` asks it."""

    def __init__(self, me: ReplicatedBlobStore, peer: ReplicatedBlobStore) -> None:
        self.me, self.peer = me, peer

    def replicate(self, records: list[bytes]) -> None:
        pass

    def catch_up_key(self, bucket: str, key: str) -> bool:
        applied = False
        for record in self.peer.key_records(bucket, key):
            applied |= self.me.apply_remote(record)
        return applied

    def read_bucket(self, bucket: str) -> Callable[[], None]:
        def finish() -> None:
            for record in self.peer.bucket_records(bucket):
                self.me.apply_remote(record)

        return finish


def _replica(name: str, shards: dict[str, ShardStore], clock: ManualClock) -> ReplicatedBlobStore:
    return ReplicatedBlobStore(
        nodes=shards,
        codec="rs:2+1",
        chunk_bytes=1024,
        inline_bytes_max=0,
        owned_nodes=(),
        node_id=name * 16,
        clock=clock,
    )


@pytest.fixture
def shards() -> dict[str, ShardStore]:
    return {name: MemoryShardStore(name) for name in ("x", "y", "z")}


def _state(store: ReplicatedBlobStore) -> dict[str, Any]:
    objects = {
        (bucket, key): (m.etag, m.content_type, m.metadata, m.version)
        for bucket, index in store.index.objects.items()
        for key, m in index.items()
    }
    tombstones = dict(store.index.tombstones)
    return {"buckets": sorted(store.index.buckets), "objects": objects, "tombstones": tombstones}


def test_a_peer_serves_what_another_node_committed(shards: dict[str, ShardStore]) -> None:
    clock = ManualClock(1_000_000)
    a, b = _replica("a", shards, clock), _replica("b", shards, clock)
    a.replicator = Recorder(b)
    a.create_bucket("photos")
    data = bytes(range(256)) * 20  # five chunks
    a.put_object("photos", "cat", data, content_type="image/png", metadata={"who": "a"})
    info, read = b.get_object("photos", "cat")
    assert read == data
    assert (info.content_type, info.metadata) == ("image/png", {"who": "a"})
    assert [o.key for o in b.list_objects("photos").objects] == ["cat"]
    assert a.delete_object("photos", "cat")
    with pytest.raises(NotFound):
        b.head_object("photos", "cat")


def test_a_key_missing_here_is_asked_of_the_peers(shards: dict[str, ShardStore]) -> None:
    """The push to this node was lost: a HEAD, GET or DELETE still finds the write."""
    clock = ManualClock(1_000_000)
    a, b = _replica("a", shards, clock), _replica("b", shards, clock)
    a.replicator, b.replicator = Lagging(a, b), Lagging(b, a)
    a.create_bucket("bkt")
    a.put_object("bkt", "k1", b"one" * 700, metadata={"n": "1"})
    a.put_object("bkt", "k2", b"two" * 700)
    assert b.head_object("bkt", "k1").metadata == {"n": "1"}
    assert b.get_object("bkt", "k1")[1] == b"one" * 700
    assert b.delete_object("bkt", "k2")  # the delete of a key b had not heard of
    assert ("bkt", "k2") in b.index.tombstones
    with pytest.raises(NotFound):
        b.head_object("bkt", "nothing")
    a.put_object("bkt", "k3", b"three")
    with pytest.raises(ConditionFailed):  # If-None-Match: * sees the key a holds
        b.put_object("bkt", "k3", b"again", condition=WriteCondition(if_none_match=True))


def test_a_keys_changes_converge_in_any_order(shards: dict[str, ShardStore]) -> None:
    clock = ManualClock(1_000_000)
    a = _replica("a", shards, clock)
    recorder = a.replicator = Recorder()
    a.create_bucket("bkt")
    a.put_object("bkt", "k", b"one" * 500)
    clock.advance(0.001)
    a.put_object("bkt", "k", b"two" * 500, content_type="text/plain")
    a.put_object("bkt", "other", b"three" * 500)
    a.delete_object("bkt", "other")  # a late PUT must not bring it back
    bucket, *changes = recorder.records
    for order in itertools.permutations(changes):
        b = _replica("b", shards, clock)
        b.apply_remote(bucket)
        for record in order:
            b.apply_remote(record)
        assert _state(b) == _state(a), order
        assert b.get_object("bkt", "k")[1] == b"two" * 500
    for record in changes:  # a's own changes come back late: none is newer than a's state
        assert not a.apply_remote(record)
    assert "other" not in a.index.objects["bkt"]


def test_a_record_for_an_unknown_bucket_is_refused(shards: dict[str, ShardStore]) -> None:
    clock = ManualClock(1_000_000)
    a, b = _replica("a", shards, clock), _replica("b", shards, clock)
    recorder = a.replicator = Recorder()
    a.create_bucket("bkt")
    a.put_object("bkt", "k", b"data" * 300)
    with pytest.raises(NotFound):
        b.apply_remote(recorder.records[1])
    assert _state(b) == {"buckets": [], "objects": {}, "tombstones": {}}


def test_a_snapshot_brings_an_empty_replica_up_to_date(shards: dict[str, ShardStore]) -> None:
    clock = ManualClock(1_000_000)
    a, b = _replica("a", shards, clock), _replica("b", shards, clock)
    a.replicator = Recorder()
    a.create_bucket("bkt")
    for i in range(5):
        a.put_object("bkt", f"k{i}", bytes([i]) * 3000, metadata={"i": str(i)})
    a.delete_object("bkt", "k3")
    upload = a.create_multipart_upload("bkt", "big")
    a.upload_part("bkt", "big", upload, 1, b"p" * 2000)
    for record in a.snapshot_records():
        b.apply_remote(record)
    assert _state(b) == _state(a)
    assert b.index.tombstones == a.index.tombstones
    assert [p.number for p in b.list_parts("bkt", "big", upload)] == [1]
    for record in a.snapshot_records():  # applying it again changes nothing
        assert not b.apply_remote(record)


class UploadsFromPeer(Lagging):
    """Pushes never arrive; an upload this node lacks is fetched from the peer."""

    def catch_up_upload(self, upload_id: str) -> bool:
        applied = False
        for record in self.peer.upload_records(upload_id):
            applied |= self.me.apply_remote(record)
        return applied


def test_an_upload_missing_here_is_fetched_from_the_peers(shards: dict[str, ShardStore]) -> None:
    """Created and partly uploaded through one node, whose pushes have not reached this one
    yet: a part through this node and the completion through it fetch the upload instead of
    answering NoSuchUpload or InvalidPart."""
    clock = ManualClock(1_000_000)
    a, b = _replica("a", shards, clock), _replica("b", shards, clock)
    a.replicator, b.replicator = UploadsFromPeer(a, b), UploadsFromPeer(b, a)
    a.part_bytes_min = b.part_bytes_min = 1000
    a.create_bucket("bkt")
    upload = a.create_multipart_upload("bkt", "big", content_type="video/mp4")
    first = a.upload_part("bkt", "big", upload, 1, b"1" * 3000)
    second = b.upload_part("bkt", "big", upload, 2, b"2" * 500)  # b had not heard of it
    assert 2 not in a.index.parts[upload]  # and a has not received b's part
    info = a.complete_multipart_upload("bkt", "big", upload, [(1, first.etag), (2, second.etag)])
    assert (info.size, info.content_type) == (3500, "video/mp4")
    assert b.get_object("bkt", "big")[1] == b"1" * 3000 + b"2" * 500
    with pytest.raises(NotFound):  # an upload nobody holds is still not found
        b.abort_multipart_upload("bkt", "big", "f" * 32)


def test_a_count_reaching_zero_deletes_no_shard(shards: dict[str, ShardStore]) -> None:
    a = _replica("a", shards, ManualClock(1_000_000))
    a.replicator = Recorder()
    a.create_bucket("bkt")
    a.put_object("bkt", "k", b"z" * 4000)
    held = {name: store.shard_keys() for name, store in shards.items()}  # type: ignore[attr-defined]
    a.delete_object("bkt", "k")
    a.ledger.wait_for_deletes()
    assert {name: store.shard_keys() for name, store in shards.items()} == held  # type: ignore[attr-defined]


# -- the collector's core ------------------------------------------------------------------


def test_a_candidate_is_due_only_after_its_mark_ages() -> None:
    collector = ClusterCollector(grace_ms=1000)
    assert collector.plan(["c1"], now_ms=0).due == ()
    assert collector.plan(["c1", "c2"], now_ms=999).due == ()
    assert collector.plan(["c1", "c2"], now_ms=1000).due == ("c1",)
    assert collector.plan(["c2"], now_ms=5000).due == ("c2",)  # c1 referenced again: unmarked
    assert collector.plan(["c1", "c2"], now_ms=5000).due == ("c2",)  # c1 starts over


def test_any_node_referencing_or_silent_keeps_the_chunk() -> None:
    collector = ClusterCollector(grace_ms=0)
    due = collector.plan(["c1", "c2", "c3"], now_ms=0).due
    assert collector.decide(due, [{"c1"}, {"c2"}]) == ["c3"]
    assert "c1" not in collector.marks  # referenced somewhere: its mark is dropped
    assert collector.decide(due, [set(), None]) == []  # a node that did not answer vetoes
    assert collector.vetoed_rounds == 1


# -- a collection round over a real disk ----------------------------------------------------


class FakePeer:
    """A peer's answer to ``meta.referenced``: the chunks it references, or down."""

    name = "peer:1"

    def __init__(self) -> None:
        self.references: set[str] = set()
        self.down = False

    def call(self, message: list[Any]) -> Any:
        if self.down:
            raise Unavailable("peer down")
        assert message[0] == "meta.referenced"
        return sorted(set(message[1]) & self.references)


def test_a_round_deletes_only_what_every_node_agrees_on(tmp_path: Path) -> None:
    clock = ManualClock(10**13)  # far after the shard files' modification times
    local = DirectoryShardStore(tmp_path / "shards", name="self:1", fsync=False)
    store = ReplicatedBlobStore(
        tmp_path / "data",
        nodes={"self:1": local},
        codec="rs:2+1",
        chunk_bytes=1024,
        inline_bytes_max=0,
        owned_nodes=(),
        node_id="a" * 16,
        fsync=False,
    )
    peer = FakePeer()
    replicator = Replicator(store, {"peer:1": peer}, local, gc_grace_s=3600, clock=clock)
    try:
        store.create_bucket("bkt")
        store.put_object("bkt", "kept", b"k" * 1024)
        store.put_object("bkt", "gone", b"g" * 1024)
        store.delete_object("bkt", "gone")
        kept, gone = (chunk_id for chunk_id in sorted(local.chunk_ids()))
        if store.ledger.count(kept) == 0:
            kept, gone = gone, kept
        assert replicator.collect_once() == 0  # marked now, due after the grace period
        clock.advance(3600)
        peer.references = {gone}
        assert replicator.collect_once() == 0  # the peer still references it
        peer.references = set()
        assert replicator.collect_once() == 0  # marked afresh
        clock.advance(3600)
        peer.down = True
        assert replicator.collect_once() == 0  # a silent node vetoes
        peer.down = False
        assert replicator.collect_once() == 1
        assert sorted(local.chunk_ids()) == [kept]
        assert store.get_object("bkt", "kept")[1] == b"k" * 1024
    finally:
        replicator.close()
        store.close()


def test_a_data_directory_is_refused_by_the_other_mode(tmp_path: Path) -> None:
    """The modes name and place shards differently: switching would hide every object. The
    refusal says which flag serves the directory and that there is no migration in place."""
    per_node, replicated = tmp_path / "per-node", tmp_path / "replicated"
    store, _ = open_node(per_node, peers=["http://127.0.0.1:9"], cluster_token="t", fsync=False)
    store.close()
    with pytest.raises(FailedPrecondition, match=r"--no-replicate-metadata.*copy its objects"):
        open_replica(per_node, self_address="127.0.0.1:8", peers=["http://127.0.0.1:9"],
                     cluster_token="t", fsync=False)  # fmt: skip
    store, _, replicator = open_replica(
        replicated, self_address="127.0.0.1:8", peers=["http://127.0.0.1:9"],
        cluster_token="t", fsync=False,
    )  # fmt: skip
    replicator.close()
    store.close()
    with pytest.raises(FailedPrecondition, match="without --no-replicate-metadata"):
        open_node(replicated, peers=["http://127.0.0.1:9"], cluster_token="t", fsync=False)


def test_the_meta_messages_refuse_bad_input_and_change_nothing(
    shards: dict[str, ShardStore],
) -> None:
    clock = ManualClock(1_000_000)
    a, b = _replica("a", shards, clock), _replica("b", shards, clock)
    recorder = a.replicator = Recorder()
    a.create_bucket("bkt")
    a.put_object("bkt", "k", b"v" * 3000)
    host = ShardHost(Path("/nonexistent"), shards["x"])  # meta messages only
    with pytest.raises(Unavailable, match="does not replicate"):
        serve_message(host, ["meta.snapshot"])
    host.records = b
    bad: list[Any] = [
        None,
        [],
        ["meta.nothing"],
        ["meta.apply"],
        ["meta.apply", {"not": "a list"}],
        ["meta.apply", [1, 2]],
        ["meta.key", "only one"],
        ["meta.upload", "a", "b"],
        ["meta.referenced", [b"bytes"]],
    ]
    for message in bad:
        with pytest.raises(InvalidArgument):
            serve_message(host, message)
    with pytest.raises(Corruption):
        serve_message(host, ["meta.apply", [b"\x00junk"]])
    assert serve_message(host, ["meta.upload", "none"]) == []
    with pytest.raises(NotFound):
        serve_message(host, ["meta.apply", recorder.records[1:]])
    assert _state(b) == {"buckets": [], "objects": {}, "tombstones": {}}
    assert serve_message(host, ["meta.apply", recorder.records]) is None
    assert b.get_object("bkt", "k")[1] == b"v" * 3000
    assert len(serve_message(host, ["meta.key", "bkt", "k"])) == 2  # the bucket and the object
