"""A bucket's versioning status in a cluster (#15): three replicas with real ``Replicator``s
talking through in-process peers, one of them cut off from the node that enabled versioning.
A write through the node that has not heard the status must still make a version (a PUT a
fresh id, a DELETE a delete marker), and a stale copy of the bucket record (a lagging node's
snapshot) must not undo the status anywhere: a status change has a version, like a key's."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from blocks.blob.cluster.peer_protocol import PeerChannel, ShardHost, serve_message
from blocks.blob.cluster.replica import ReplicatedBlobStore
from blocks.blob.cluster.replication import Replicator
from blocks.blob.storage.buckets import ENABLED, SUSPENDED
from blocks.blob.storage.shards import DirectoryShardStore, MemoryShardStore, ShardStore
from blocks.blob.storage.versioned import NULL_VERSION, DeleteMarkerFound
from blocks.core.clock import ManualClock
from blocks.core.errors import InvalidArgument, Unavailable

NAMES = ("a", "b", "c")


class Link:
    """A peer as its replicator sees it: ``call`` has the other node answer the message
    unless the link is cut (then ``Unavailable``, as for a peer that is down)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.target: ShardHost | None = None
        self.cut = False

    def call(self, message: list[Any]) -> Any:
        if self.cut or self.target is None:
            raise Unavailable(f"link to {self.name} cut")
        return serve_message(self.target, message)


class Cluster:
    def __init__(self) -> None:
        clock = ManualClock(1_000_000)
        shards: dict[str, ShardStore] = {name: MemoryShardStore(name) for name in NAMES}
        self.stores: dict[str, ReplicatedBlobStore] = {}
        self.links: dict[tuple[str, str], Link] = {}
        self.replicators: dict[str, Replicator] = {}
        for name in NAMES:
            self.stores[name] = ReplicatedBlobStore(
                nodes=shards,
                codec="rs:2+1",
                chunk_bytes=1024,
                inline_bytes_max=0,  # as a replica runs: bodies stay out of the records
                owned_nodes=(),
                node_id=name * 16,
                clock=clock,
            )
        for name in NAMES:
            peers: dict[str, PeerChannel] = {}
            for other in NAMES:
                if other != name:
                    peers[other] = self.links[name, other] = Link(other)
            local = cast(DirectoryShardStore, shards[name])  # only collection uses it
            replicator = Replicator(self.stores[name], peers, local, clock=clock)
            self.replicators[name] = self.stores[name].replicator = replicator
        for (_, other), link in self.links.items():
            link.target = ShardHost(Path("/nonexistent"), shards[other])  # meta messages only
            link.target.records = self.stores[other]

    def cut(self, one: str, other: str, cut: bool = True) -> None:
        self.links[one, other].cut = self.links[other, one].cut = cut

    def close(self) -> None:
        for replicator in self.replicators.values():
            replicator.close()


def _eventually(holds: Callable[[], bool]) -> None:
    """Wait (bounded) for the pushes still on their way to the node outside the majority."""
    deadline = time.monotonic() + 30.0
    while not holds():
        assert time.monotonic() < deadline, "never held"
        time.sleep(0.005)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    made = Cluster()
    yield made
    made.close()


def test_a_put_through_a_node_that_missed_the_status_gets_a_version(cluster: Cluster) -> None:
    a, b, c = (cluster.stores[name] for name in NAMES)
    a.create_bucket("bkt")
    _eventually(lambda: "bkt" in c.index.buckets)  # every node holds the bucket
    cluster.cut("a", "c")
    a.set_bucket_versioning("bkt", ENABLED)  # acknowledged by a and b; c has not heard
    assert c.index.versioning.get("bkt", "") == ""
    first = c.put_object("bkt", "k", b"one" * 300)
    second = c.put_object("bkt", "k", b"two" * 2000)
    assert NULL_VERSION not in (first.version_id, second.version_id)
    assert first.version_id != second.version_id
    assert c.bucket_versioning("bkt") == ENABLED
    cluster.cut("a", "c", cut=False)
    cluster.replicators["a"].sync_once()  # a was cut off from c's pushes
    for store in (a, b, c):
        held = [m.version_id for m in store.index.versions("bkt", "k")]
        assert held == [second.version_id, first.version_id], store.node_id
        assert store.get_object("bkt", "k")[1] == b"two" * 2000


def test_a_delete_through_a_node_that_missed_the_status_writes_a_marker(
    cluster: Cluster,
) -> None:
    a, b, c = (cluster.stores[name] for name in NAMES)
    a.create_bucket("bkt")
    a.put_object("bkt", "k", b"plain")  # the null version, from before versioning
    _eventually(lambda: bool(c.index.versions("bkt", "k")))
    cluster.cut("a", "c")
    a.set_bucket_versioning("bkt", ENABLED)
    c.delete_object("bkt", "k")  # must leave the null version and add a marker
    with pytest.raises(DeleteMarkerFound):
        b.get_object("bkt", "k")
    assert b.get_object("bkt", "k", version_id=NULL_VERSION)[1] == b"plain"


def test_a_suspension_reaches_a_write_through_a_node_that_missed_it(cluster: Cluster) -> None:
    a, _, c = (cluster.stores[name] for name in NAMES)
    a.create_bucket("bkt")
    a.set_bucket_versioning("bkt", ENABLED)
    _eventually(lambda: c.index.versioning.get("bkt") == ENABLED)
    cluster.cut("a", "c")
    a.set_bucket_versioning("bkt", SUSPENDED)
    assert c.put_object("bkt", "k", b"x").version_id == NULL_VERSION


def test_a_stale_bucket_record_does_not_undo_a_status(cluster: Cluster) -> None:
    a, b, c = (cluster.stores[name] for name in NAMES)
    a.create_bucket("bkt")
    _eventually(lambda: "bkt" in c.index.buckets)
    cluster.cut("a", "c")
    cluster.cut("b", "c")
    a.set_bucket_versioning("bkt", ENABLED)
    stale = c.key_records("bkt", "k")[0]  # c's bucket record, without the status
    assert not a.apply_remote(stale)
    cluster.cut("a", "c", cut=False)
    cluster.cut("b", "c", cut=False)
    cluster.replicators["a"].sync_once()  # pulls c's snapshot: its old record too
    cluster.replicators["c"].sync_once()
    assert [s.bucket_versioning("bkt") for s in (a, b, c)] == [ENABLED] * 3
    a.set_bucket_versioning("bkt", SUSPENDED)  # a later change still wins everywhere
    _eventually(lambda: [s.bucket_versioning("bkt") for s in (a, b, c)] == [SUSPENDED] * 3)


def test_a_write_that_cannot_reach_a_majority_for_the_status_is_refused(
    cluster: Cluster,
) -> None:
    a, _, c = (cluster.stores[name] for name in NAMES)
    a.create_bucket("bkt")
    _eventually(lambda: "bkt" in c.index.buckets)
    cluster.cut("a", "c")
    cluster.cut("b", "c")
    with pytest.raises(Unavailable):
        c.put_object("bkt", "k", b"x" * 3000)  # three chunks stored before the stamp
    assert c.index.versions("bkt", "k") == []  # nothing journaled
    assert list(c.ledger.referenced()) == []  # and nothing left pinned
    with pytest.raises(Unavailable):
        c.delete_object("bkt", "k")


def test_a_settings_change_through_a_lagging_node_keeps_the_status(cluster: Cluster) -> None:
    """Changing the policy copies the other settings: from the newest, not from a node that
    missed the status."""
    a, b, c = (cluster.stores[name] for name in NAMES)
    a.create_bucket("bkt")
    _eventually(lambda: "bkt" in c.index.buckets)
    cluster.cut("a", "c")
    a.set_bucket_versioning("bkt", ENABLED)
    c.set_bucket_acl("bkt", "public-read")
    cluster.cut("a", "c", cut=False)
    cluster.replicators["a"].sync_once()
    for store in (a, b, c):
        assert store.bucket_versioning("bkt") == ENABLED, store.node_id
        assert store.bucket_access("bkt") == ("", "public-read"), store.node_id


def test_a_replica_refuses_inline_bodies() -> None:
    """A peer installs a pushed manifest without its body: an inline object would read
    back empty there (seen: a 5-byte PUT read as b"" on a peer), so replicas refuse it."""
    shards: dict[str, ShardStore] = {name: MemoryShardStore(name) for name in NAMES}
    for inline in (512, None):
        extra = {} if inline is None else {"inline_bytes_max": inline}
        with pytest.raises(InvalidArgument):
            ReplicatedBlobStore(
                nodes=shards, codec="rs:2+1", owned_nodes=(), node_id="a" * 16, **extra
            )
