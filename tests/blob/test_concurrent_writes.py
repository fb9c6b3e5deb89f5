"""Concurrent writes of one key in a cluster (#15: AWS's semantics): unconditional PUTs and
DELETEs of one key, through one node or several, all succeed and the last one journaled
wins everywhere; none is refused because another one of the key, stamped later, got in
first. Each case builds the race on purpose: a write is held between its stamp and its
commit (``PausingReplica``) while another write of the key commits, through this node or a
peer whose clock runs ahead. Every node then holds the same newest version, the journal
replays to the same index, and a versioned bucket lists every acknowledged version, in
version order. A peer's record overtaken while it waited for compaction is dropped, not
journaled after the newer one. A conditional write racing another is refused with
``WriteConflict``, and each ``Conflict`` gets the S3 code of what conflicted."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from blocks.blob.cluster.replica import ReplicatedBlobStore
from blocks.blob.conditions import ConditionFailed, WriteCondition
from blocks.blob.errors import BucketBusy, BucketExists, BucketNotEmpty, WriteConflict
from blocks.blob.s3.buckets import map_error
from blocks.blob.storage.index import MetaIndex
from blocks.blob.storage.shards import MemoryShardStore, ShardStore
from blocks.blob.store import LocalBlobStore
from blocks.core.clock import ManualClock
from blocks.core.errors import Conflict

WAIT_S = 10.0


class Push:
    """A replicator stand-in: every record pushed is applied on every peer at once."""

    def __init__(self, *peers: ReplicatedBlobStore) -> None:
        self.peers = peers

    def replicate(self, records: list[bytes]) -> None:
        for peer in self.peers:
            for record in records:
                peer.apply_remote(record)

    def catch_up_key(self, bucket: str, key: str) -> bool:
        return False

    def catch_up_upload(self, upload_id: str) -> bool:
        return False

    def read_bucket(self, bucket: str) -> Callable[[], None]:
        return lambda: None  # every push reached every replica


class Keep(Push):
    """A replicator stand-in that keeps what is pushed instead of delivering it."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[bytes] = []

    def replicate(self, records: list[bytes]) -> None:
        self.records += records


class PausingReplica(ReplicatedBlobStore):
    """A replica whose next write (``hold()``) waits, once stamped, until ``release()``:
    what happens in between is the race."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._hold = False
        self.stamped = threading.Event()
        self._released = threading.Event()

    def hold(self) -> None:
        self._hold, self.stamped, self._released = True, threading.Event(), threading.Event()

    def release(self) -> None:
        self._released.set()

    def _stamp(self, bucket: str, key: str) -> tuple[int, str]:
        stamp = super()._stamp(bucket, key)
        if self._hold:
            self._hold = False
            self.stamped.set()
            assert self._released.wait(WAIT_S)
        return stamp


def _open(
    name: str, shards: dict[str, ShardStore], skew_ms: int, root: Path | None
) -> PausingReplica:
    return PausingReplica(
        root / name if root is not None else None,
        nodes=shards,
        codec="rs:2+1",
        chunk_bytes=1024,
        inline_bytes_max=0,
        owned_nodes=(),
        node_id=name * 16,
        clock=ManualClock(1_000_000 + skew_ms),
        fsync=False,
    )


def _connect(nodes: dict[str, PausingReplica]) -> None:
    for name, node in nodes.items():
        node.replicator = Push(*(peer for other, peer in nodes.items() if other != name))


def _cluster(skews_ms: dict[str, int], root: Path | None = None) -> dict[str, PausingReplica]:
    """Replicas named by ``skews_ms``, each on its own clock that far ahead, pushing to all;
    with ``root``, each journals under ``root / name``."""
    shards: dict[str, ShardStore] = {name: MemoryShardStore(name) for name in ("x", "y", "z")}
    nodes = {name: _open(name, shards, skew, root) for name, skew in skews_ms.items()}
    _connect(nodes)
    return nodes


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[dict[str, PausingReplica]]:
    nodes = _cluster({"a": 0, "b": 5_000}, tmp_path)  # b's clock runs 5 s ahead of a's
    yield nodes
    for node in nodes.values():
        node.close()


def _held(node: PausingReplica, call: Callable[[], object]) -> Callable[[], object]:
    """Start ``call`` (a write through ``node``) in a thread, held once stamped; the result
    returns what it returned, or raises what it raised, once released."""
    node.hold()
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as error:
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    assert node.stamped.wait(WAIT_S)

    def result() -> object:
        node.release()
        thread.join(WAIT_S)
        assert outcome, "the held write did not finish"
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    return result


def _objects(index: MetaIndex) -> dict[tuple[str, str], list[tuple[Any, ...]]]:
    """Every version of every key: (version, version id, etag, marker), newest first."""
    return {
        (bucket, key): [(m.version, m.version_id, m.etag, m.delete_marker) for m in versions]
        for bucket in index.objects
        for key in {*index.objects[bucket], *index.history[bucket]}
        if (versions := index.versions(bucket, key))
    }


def _converged(nodes: dict[str, PausingReplica]) -> dict[tuple[str, str], list[tuple[Any, ...]]]:
    """Every node holds the same versions and tombstones, and replaying its journal
    rebuilds the same index; returns the versions."""
    states = {name: _objects(node.index) for name, node in nodes.items()}
    first = next(iter(states.values()))
    assert all(state == first for state in states.values()), states
    for node in nodes.values():
        replayed = node._replay()
        assert _objects(replayed) == first
        assert dict(replayed.tombstones) == dict(node.index.tombstones)
    return first


def test_a_put_stamped_earlier_but_committed_later_on_one_node_wins(
    pair: dict[str, PausingReplica],
) -> None:
    a = pair["a"]
    a.create_bucket("bkt")
    first = _held(a, lambda: a.put_object("bkt", "k", b"first" * 300))
    second = a.put_object("bkt", "k", b"second" * 300)  # stamped later, committed first
    info = first()  # used to raise Conflict (409 BucketAlreadyOwnedByYou)
    assert a.restamped == 1
    assert info.modified_ms > second.modified_ms  # type: ignore[attr-defined]
    for node in pair.values():  # the last one journaled wins, on every node
        assert node.get_object("bkt", "k")[1] == b"first" * 300
    _converged(pair)


def test_a_put_meeting_a_peers_later_stamp_wins_on_every_node(
    pair: dict[str, PausingReplica],
) -> None:
    a, b = pair["a"], pair["b"]
    a.create_bucket("bkt")
    late = _held(a, lambda: a.put_object("bkt", "k", b"from a" * 300))
    b.put_object("bkt", "k", b"from b" * 300)  # 5 s ahead: installed on a before a commits
    late()  # used to raise Conflict
    for node in pair.values():
        assert node.get_object("bkt", "k")[1] == b"from a" * 300
    versions = _converged(pair)
    assert versions["bkt", "k"][0][0][1] == "a" * 16  # a's write is the newest version


def test_writes_after_a_restart_pass_a_peers_version_ahead_of_the_clock(
    pair: dict[str, PausingReplica],
) -> None:
    """The journal's versions are not observed by the clock at open: a node restarted
    after a peer 5 s ahead wrote a key stamps below that version, and every write of the
    key used to fail until its clock caught up."""
    a, b = pair["a"], pair["b"]
    a.create_bucket("bkt")
    b.put_object("bkt", "k", b"from b" * 300)
    b.put_object("bkt", "gone", b"from b" * 300)
    a.close()
    assert a.directory is not None
    a = pair["a"] = _open("a", dict(a.chunks.nodes), 0, a.directory.parent)
    _connect(pair)
    assert a.delete_object("bkt", "gone")  # used to raise Conflict
    a.put_object("bkt", "k", b"from a" * 300)
    for node in pair.values():
        assert node.get_object("bkt", "k")[1] == b"from a" * 300
        assert "gone" not in node.index.objects["bkt"]
    _converged(pair)
    assert a.restamped == 1  # the delete; its clock observed b's version, the PUT is past it


def test_a_suspended_buckets_null_version_is_restamped_and_versions_are_kept(
    pair: dict[str, PausingReplica],
) -> None:
    """In a versioned bucket PUTs make versions of their own (no race); once suspended, the
    null version is one entity again and races as an unversioned key does."""
    a, b = pair["a"], pair["b"]
    a.create_bucket("bkt")
    a.set_bucket_versioning("bkt", "Enabled")
    ids = {b.put_object("bkt", "k", b"b1" * 600).version_id}
    held = _held(a, lambda: a.put_object("bkt", "k", b"a1" * 600))
    ids.add(b.put_object("bkt", "k", b"b2" * 600).version_id)
    ids.add(held().version_id)  # type: ignore[attr-defined]
    a.set_bucket_versioning("bkt", "Suspended")
    held = _held(a, lambda: a.put_object("bkt", "k", b"a-null" * 300))
    b.put_object("bkt", "k", b"b-null" * 300)
    held()  # used to raise Conflict
    versions = _converged(pair)["bkt", "k"]
    assert {v[1] for v in versions} == ids | {""}  # every acknowledged version, one null
    assert versions == sorted(versions, reverse=True)  # newest first, by version
    assert versions[0][1] == "" and a.get_object("bkt", "k")[1] == b"a-null" * 300


def test_a_conditional_write_racing_another_is_a_write_conflict(
    pair: dict[str, PausingReplica], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another write of the key waits for its journal, ``If-Match`` cannot be judged:
    S3's 409 ConditionalRequestConflict (retry). Once it landed: 412. (A key this node has
    never held is different: the write first waits for changes of it in flight here.)"""
    a = pair["a"]
    a.create_bucket("bkt")
    zero = a.put_object("bkt", "k", b"zero" * 400)
    real_submit, gate, held = a.journal.submit, threading.Event(), [False]

    def held_submit(data: bytes) -> Future[int]:  # the first record waits for the gate
        if held[0]:
            return real_submit(data)
        held[0] = True
        future: Future[int] = Future()

        def land() -> None:
            gate.wait(WAIT_S)
            future.set_result(real_submit(data).result())

        threading.Thread(target=land).start()
        return future

    monkeypatch.setattr(a.journal, "submit", held_submit)
    writer = threading.Thread(target=a.put_object, args=("bkt", "k", b"one" * 400))
    writer.start()
    replace_zero = WriteCondition(if_match=zero.etag)
    try:
        deadline = time.monotonic() + WAIT_S
        while not a._key_busy("bkt", "k") and time.monotonic() < deadline:
            time.sleep(0.001)
        with pytest.raises(WriteConflict):
            a.put_object("bkt", "k", b"two" * 400, condition=replace_zero)
    finally:
        gate.set()
        writer.join(WAIT_S)
    with pytest.raises(ConditionFailed):
        a.put_object("bkt", "k", b"two" * 400, condition=replace_zero)
    assert a.get_object("bkt", "k")[1] == b"one" * 400


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_writers_on_three_skewed_nodes_all_succeed_and_converge(seed: int) -> None:
    """Threads PUT and DELETE one key through three nodes whose clocks differ: every call
    succeeds, and every node ends with the same version (the newest), as replay does."""
    rng = random.Random(seed)
    nodes = _cluster({name: rng.randrange(0, 3_000) for name in "abc"})
    try:
        nodes["a"].create_bucket("bkt")
        errors: list[BaseException] = []

        def writer(n: int) -> None:
            try:
                for i in range(15):
                    node = nodes["abc"[(n + i) % 3]]
                    if (n * 7 + i) % 5 == 4:
                        node.delete_object("bkt", "k")
                    else:
                        node.put_object("bkt", "k", f"{n}:{i}".encode() * 200)
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors[:3]
        _converged(nodes)
    finally:
        for node in nodes.values():
            node.close()


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (BucketExists("bucket 'b' already exists"), "BucketAlreadyOwnedByYou"),
        (BucketNotEmpty("bucket 'b' has multipart uploads in progress"), "BucketNotEmpty"),
        (BucketBusy("a change of bucket 'b' is in flight; retry"), "OperationAborted"),
        (
            WriteConflict("another write of key 'not empty' is in flight"),
            "ConditionalRequestConflict",
        ),
        (Conflict("anything else"), "OperationAborted"),
    ],
)
def test_a_conflicts_s3_code_follows_what_conflicted_not_its_text(
    error: Conflict, code: str
) -> None:
    assert map_error(error) == (409, code)


def test_a_peers_record_overtaken_while_it_waited_for_compaction_is_dropped(
    pair: dict[str, PausingReplica], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A submission past twice the compaction bound waits (the lock released) for the
    changes in flight to drain; a peer's newer record of the key landing meanwhile must
    leave the waiting older one dropped, not journaled after it."""
    a, b = pair["a"], pair["b"]
    a.create_bucket("bkt")
    kept = Keep()
    b.replicator = kept  # b's pushes are handed to a by hand below
    b.put_object("bkt", "k", b"older" * 300)
    b.put_object("bkt", "k", b"newer" * 300)
    older, newer = kept.records
    landing = [newer]
    real_compact = a._maybe_compact

    def compact_and_let_the_newer_land() -> bool:  # runs in the wait, lock held
        if landing:
            assert a.apply_remote(landing.pop())
        return real_compact()

    monkeypatch.setattr(a, "_compaction_bound", lambda: 0)  # every submission waits
    monkeypatch.setattr(a, "_maybe_compact", compact_and_let_the_newer_land)
    dropped = a.remote_dropped
    assert not a.apply_remote(older)
    assert a.remote_dropped == dropped + 1
    assert a.get_object("bkt", "k")[1] == b"newer" * 300
    assert _objects(a._replay()) == _objects(a.index)


def test_a_conditional_write_is_judged_after_any_wait_for_compaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The wait for compaction releases the lock: a write of the key landing in it must be
    what ``If-Match`` is judged against (it used to be judged before the wait, and the
    conditional write then replaced a version it had never seen)."""
    store = LocalBlobStore(inline_bytes_max=0)
    store.create_bucket("bkt")
    zero = store.put_object("bkt", "k", b"zero" * 400)
    landing = [b"one" * 400]
    real_compact = store._maybe_compact

    def compact_and_let_a_write_land() -> bool:  # runs in the wait, lock held
        if landing:
            store.put_object("bkt", "k", landing.pop())
        return real_compact()

    monkeypatch.setattr(store, "_compaction_bound", lambda: 0)  # every submission waits
    monkeypatch.setattr(store, "_maybe_compact", compact_and_let_a_write_land)
    with pytest.raises(ConditionFailed):
        store.put_object("bkt", "k", b"two" * 400, condition=WriteCondition(if_match=zero.etag))
    assert store.get_object("bkt", "k")[1] == b"one" * 400
