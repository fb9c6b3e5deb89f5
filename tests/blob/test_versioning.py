"""S3 object versions in the store (#15): a model-based test of versions, delete markers and
the null version against a list per key; versions kept across a reopen and a compaction;
chunks of non-current versions stay referenced (scrubs and the cluster collector keep them)
and go once the version is deleted; replicas converge on a key's versions whatever order the
records arrive in, and a snapshot carries them. Also the read of a key whose change is in
flight on the node read (a completed multipart upload fetched from a peer while the push of
the same completion is still being journaled there answered NoSuchKey)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from blocks.blob.cluster.replica import ReplicatedBlobStore
from blocks.blob.storage.buckets import ENABLED, SUSPENDED
from blocks.blob.storage.journal import MemoryJournal
from blocks.blob.storage.shards import MemoryShardStore, ShardStore
from blocks.blob.storage.versioned import NULL_VERSION, DeleteMarkerFound
from blocks.blob.store import LocalBlobStore
from blocks.core.clock import ManualClock
from blocks.core.errors import Conflict, NotFound


def _versions(store: LocalBlobStore, bucket: str) -> list[tuple[str, str, bool, bool, bytes]]:
    """(key, version id, latest, marker, bytes, modified) of every version, as listed."""
    found = []
    for entry in store.list_object_versions(bucket).versions:
        data = b""
        if not entry.delete_marker:
            data = store.get_object(bucket, entry.key, version_id=entry.version_id)[1]
        found.append((entry.key, entry.version_id, entry.is_latest, entry.delete_marker, data))
    return found


KEYS = st.sampled_from(["a", "b", "d/x", "d/y"])


class VersionsMachine(RuleBasedStateMachine):
    """A bucket whose status changes, against a list of (version id, bytes or None for a
    marker) per key, newest first."""

    def __init__(self) -> None:
        super().__init__()
        self.store = LocalBlobStore(None, chunk_bytes=64, inline_bytes_max=32)
        self.store.create_bucket("bkt")
        self.status = ""
        self.model: dict[str, list[tuple[str, bytes | None]]] = {}

    def _write(self, key: str, version_id: str, data: bytes | None) -> None:
        versions = self.model.setdefault(key, [])
        if version_id == NULL_VERSION:
            versions[:] = [v for v in versions if v[0] != NULL_VERSION]
        versions.insert(0, (version_id, data))

    @rule(status=st.sampled_from([ENABLED, SUSPENDED]))
    def set_status(self, status: str) -> None:
        self.store.set_bucket_versioning("bkt", status)
        self.status = status

    @rule(key=KEYS, data=st.binary(max_size=150))
    def put(self, key: str, data: bytes) -> None:
        info = self.store.put_object("bkt", key, data)
        expected = {"": "", SUSPENDED: NULL_VERSION}.get(self.status)
        assert expected is None or info.version_id == expected
        self._write(key, info.version_id or NULL_VERSION, data)

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        outcome = self.store.delete_version("bkt", key)
        if self.status:
            assert outcome.delete_marker
            self._write(key, outcome.version_id, None)
        else:
            self.model[key] = [v for v in self.model.get(key, []) if v[0] != NULL_VERSION]

    @precondition(lambda self: any(self.model.values()))
    @rule(pick=st.integers(min_value=0))
    def delete_one_version(self, pick: int) -> None:
        named = [(key, v[0]) for key, versions in self.model.items() for v in versions]
        key, version_id = named[pick % len(named)]
        self.store.delete_version("bkt", key, version_id)
        self.model[key] = [v for v in self.model[key] if v[0] != version_id]

    @invariant()
    def listing_and_reads_match(self) -> None:
        expected = [
            (key, vid, i == 0, data is None, data or b"")
            for key in sorted(self.model)
            for i, (vid, data) in enumerate(self.model[key])
        ]
        assert _versions(self.store, "bkt") == expected
        paged: list[tuple[str, str]] = []
        key_marker = version_id_marker = ""
        while True:  # pages of two, resumed from the markers
            page = self.store.list_object_versions(
                "bkt", max_keys=2, key_marker=key_marker, version_id_marker=version_id_marker
            )
            paged += [(entry.key, entry.version_id) for entry in page.versions]
            if not page.is_truncated:
                break
            key_marker, version_id_marker = page.next_key_marker, page.next_version_id_marker
        assert paged == [(key, vid) for key, vid, *_ in expected]
        rolled = self.store.list_object_versions("bkt", delimiter="/")
        assert rolled.common_prefixes == (
            ("d/",) if any(e[0].startswith("d/") for e in expected) else ()
        )
        assert [e.key for e in rolled.versions] == [e[0] for e in expected if "/" not in e[0]]
        for key, versions in self.model.items():
            if versions and versions[0][1] is not None:
                assert self.store.get_object("bkt", key)[1] == versions[0][1]
            else:
                with pytest.raises(NotFound):
                    self.store.head_object("bkt", key)
        current = [o.key for o in self.store.list_objects("bkt").objects]
        assert current == [
            k for k in sorted(self.model) if self.model[k] and self.model[k][0][1] is not None
        ]

    def teardown(self) -> None:
        self.store.close()


TestVersionsMachine = VersionsMachine.TestCase
TestVersionsMachine.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)


def test_versions_survive_a_reopen_and_a_compaction(tmp_path: Path) -> None:
    def open_store() -> LocalBlobStore:
        return LocalBlobStore(tmp_path, chunk_bytes=1024, compact_bytes_min=1, fsync=False)

    store = open_store()
    store.create_bucket("bkt")
    store.put_object("bkt", "k", b"plain")  # the null version, from before versioning
    store.set_bucket_versioning("bkt", ENABLED)
    big = store.put_object("bkt", "k", b"big" * 1000).version_id  # chunked
    small = store.put_object("bkt", "k", b"small").version_id  # inline
    marker = store.delete_version("bkt", "k").version_id
    store.delete_version("bkt", "k", small)
    before = _versions(store, "bkt")
    assert [(v[1], v[3]) for v in before] == [(marker, True), (big, False), ("null", False)]
    store.close()
    store = open_store()
    assert _versions(store, "bkt") == before
    assert store.bucket_versioning("bkt") == ENABLED
    for _ in range(200):  # churn until the journal is compacted
        version_id = store.put_object("bkt", "other", b"x").version_id
        store.delete_version("bkt", "other", version_id)
        if store.compactions:
            break
    assert _versions(store, "bkt") == before
    store.close()
    store = open_store()
    assert _versions(store, "bkt") == before
    store.close()


def test_chunks_of_older_versions_stay_until_the_version_goes(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, chunk_bytes=1024, orphan_grace_s=0, fsync=False)
    store.create_bucket("bkt")
    store.set_bucket_versioning("bkt", ENABLED)
    old = store.put_object("bkt", "k", b"o" * 3000).version_id
    store.put_object("bkt", "k", b"n" * 3000)
    store.delete_version("bkt", "k")
    old_chunks = store.index.find_version("bkt", "k", old).chunks  # type: ignore[union-attr]
    store.scrub()  # collects orphans: none of these is one
    assert all(store.ledger.count(ref.chunk_id) > 0 for ref in old_chunks)
    assert store.get_object("bkt", "k", version_id=old)[1] == b"o" * 3000
    store.delete_version("bkt", "k", old)
    store.ledger.wait_for_deletes()
    assert all(store.ledger.count(ref.chunk_id) == 0 for ref in old_chunks)
    with pytest.raises(Conflict):  # a version and a delete marker are still there
        store.delete_bucket("bkt")
    store.close()


class Recorder:
    def __init__(self) -> None:
        self.records: list[bytes] = []

    def replicate(self, records: list[bytes]) -> None:
        self.records += records

    def catch_up_key(self, bucket: str, key: str) -> bool:
        return False

    def read_bucket(self, bucket: str) -> Callable[[], None]:
        return lambda: None  # every push reached every replica


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


def _replica_state(store: ReplicatedBlobStore) -> Any:
    index = store.index
    keys = sorted(set(index.objects.get("bkt", {})) | set(index.history.get("bkt", {})))
    versions = {
        key: [
            (m.version_id, m.delete_marker, m.etag, m.version) for m in index.versions("bkt", key)
        ]
        for key in keys
    }
    return versions, dict(index.tombstones), index.versioning


@pytest.fixture
def shards() -> dict[str, ShardStore]:
    return {name: MemoryShardStore(name) for name in ("x", "y", "z")}


def test_replicas_converge_on_versions_in_any_order(shards: dict[str, ShardStore]) -> None:
    clock = ManualClock(1_000_000)
    a = _replica("a", shards, clock)
    recorder = a.replicator = Recorder()
    a.create_bucket("bkt")
    a.set_bucket_versioning("bkt", ENABLED)
    first = a.put_object("bkt", "k", b"one" * 500).version_id
    a.put_object("bkt", "k", b"two" * 500)
    a.delete_version("bkt", "k")  # a marker
    a.delete_version("bkt", "k", first)  # gone for good: a late PUT of it must not return
    created, versioning, *changes = recorder.records
    for order in itertools.permutations(changes):
        b = _replica("b", shards, clock)
        b.apply_remote(created)
        b.apply_remote(versioning)
        for record in order:
            b.apply_remote(record)
        assert _replica_state(b) == _replica_state(a), order
        with pytest.raises(DeleteMarkerFound):
            b.get_object("bkt", "k")
    fresh = _replica("c", shards, clock)  # and a snapshot carries all of it
    for record in a.snapshot_records():
        fresh.apply_remote(record)
    assert _replica_state(fresh) == _replica_state(a)
    live = [ref.chunk_id for m in a.index.versions("bkt", "k") for ref in m.chunks]
    assert live and a.referenced(live) == live  # what the cluster collector asks


class HeldJournal(MemoryJournal):
    """A journal whose commits wait while ``held`` is set (a slow fsync)."""

    def __init__(self) -> None:
        super().__init__()
        self.held = False
        self.waiting: list[tuple[Future[int], Future[int]]] = []

    def submit(self, record: bytes) -> Future[int]:
        done = super().submit(record)
        if not self.held:
            return done
        pending: Future[int] = Future()
        self.waiting.append((done, pending))
        return pending

    def release(self) -> None:
        self.held = False
        for done, pending in self.waiting:
            pending.set_result(done.result())


class FromPeer:
    """``catch_up_key`` fetches the key's records from ``peer`` and applies them to ``me``."""

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


class LandsDuringFetch(FromPeer):
    """The peer's copy is fetched and dropped (the push is in flight), then the push lands
    before the fetch returns: nothing the fetch applied changed anything."""

    def __init__(
        self, me: ReplicatedBlobStore, peer: ReplicatedBlobStore, held: HeldJournal
    ) -> None:
        super().__init__(me, peer)
        self.held = held
        self.pushed: threading.Thread | None = None

    def catch_up_key(self, bucket: str, key: str) -> bool:
        applied = super().catch_up_key(bucket, key)
        self.held.release()
        assert self.pushed is not None
        self.pushed.join(10)
        return applied


@pytest.mark.parametrize("landing", ["after the fetch", "during the fetch"])
def test_a_read_waits_for_the_same_change_in_flight_here(
    shards: dict[str, ShardStore], landing: str
) -> None:
    """The completion was acknowledged by a majority without this node; its push here is
    being journaled when a GET arrives: the copy fetched from a peer is dropped as not newer
    than the change in flight, and the GET used to answer NoSuchKey at once. It now waits for
    that change to land, and reads again even when it landed before the wait began (a stress
    run of the multipart process test still saw 5 NoSuchKey in 100 until then)."""
    clock = ManualClock(1_000_000)
    a, b = _replica("a", shards, clock), _replica("b", shards, clock)
    recorder = a.replicator = Recorder()
    held = b.journal = HeldJournal()
    replicator = b.replicator = (
        FromPeer(b, a) if landing == "after the fetch" else LandsDuringFetch(b, a, held)
    )
    a.create_bucket("bkt")
    upload = a.create_multipart_upload("bkt", "big", content_type="video/mp4")
    part = a.upload_part("bkt", "big", upload, 1, b"p" * 3000)
    a.complete_multipart_upload("bkt", "big", upload, [(1, part.etag)])
    *earlier, completion = recorder.records
    for record in earlier:
        b.apply_remote(record)
    held.held = True
    pushed = threading.Thread(target=b.apply_remote, args=(completion,))
    pushed.start()
    while not held.waiting:  # the push is journaled, not yet durable
        pushed.join(0.01)
    if isinstance(replicator, LandsDuringFetch):
        replicator.pushed = pushed
    else:
        threading.Timer(0.2, held.release).start()
    info, data = b.get_object("bkt", "big")
    assert (data, info.content_type) == (b"p" * 3000, "video/mp4")
    pushed.join(10)
