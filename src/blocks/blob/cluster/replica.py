"""``ReplicatedBlobStore``: one node's full copy of a cluster's metadata.

Theory of operation. In a cluster started with ``--replicate-metadata`` every node keeps the
metadata of *every* object, not only of those it took: its journal holds its own changes and
those its peers pushed to it, and its index answers any HEAD, GET or listing. A change made
here is committed to the local journal as on a single node (``committing``); the
records the calling thread submitted are then pushed to the peers by the ``replicator``
(``replication.Replicator``) and the call returns only when a majority of the nodes (this
one included) hold them durably. A change a peer pushes (or that a sync pulls) goes through
``apply_remote`` (``replica_peers``, the half that peers call): it is journaled here, then
applied to the index.

Ordering. Writes of one key on different nodes are ordered by a *version*, ``(modified_ms,
writer)``: the writer is the node id, and ``modified_ms`` comes from a hybrid clock
(``HybridClock``) that never goes back and jumps past every version this node has seen, so a
change made here after seeing a peer's is newer than it. Every node applies a key's changes
last-version-wins: a pushed record older than what the node holds (an object, a tombstone, or
a change in flight) is acknowledged and dropped. A local change whose version is not past
the newest this node holds of its key (a peer's push of a later stamp landed, or a change
here stamped later was submitted first, between the stamp and the submission) is
*restamped* just before it is journaled (``_ordered``): the hybrid clock observes the
newest and gives a later time; writer, version id, chunks (named by their bytes) and body
stay. So concurrent unconditional writes of one key all succeed and the last one journaled
wins, as S3's last-writer-wins; a null version (an unversioned or suspended bucket) is the
only kind that meets another, since every other version has an id of its own. The journal
therefore holds a key's changes in version order, and replay (journal order) rebuilds the
same index.

Versioning status. What a write of an object makes (a fresh version id, the null version, a
delete marker or a removal) depends on its bucket's versioning status, which a node learns
from a pushed ``BucketPut``; a node outside the majority that acknowledged a status change
may not have it yet. So every such write (PUT, copy, completion, DELETE) first reads the
bucket's record from a majority (``RecordSink.read_bucket``: one round trip to the peers;
a PUT starts it before storing the body and waits for it only to stamp its version) and
applies the newest: any two majorities share a node, so a
write begun after a status change was acknowledged sees it. Settings changes carry a version
(``BucketPut.settings_version``), so the newest wins whatever order copies arrive in, and
read the bucket from a majority first too: a change copies the settings it does not change,
and a lagging node's copy would undo them.

Chunks. Reference counts cover every node's objects; a count reaching zero deletes nothing
(``ChunkLedger.delete_unreferenced`` is off): another node may be about to reference the
chunk. Chunks are collected only by the cluster collector (``gc``) with marks, a grace period
and the agreement of every node.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, Protocol, cast

from blocks.blob.api import BucketInfo, ObjectInfo, PartInfo
from blocks.blob.cluster.replica_peers import Overtaken, PeerRecordsMixin
from blocks.blob.storage.committing import RecordT
from blocks.blob.storage.records import (
    BucketDelete,
    ObjectDelete,
    ObjectPut,
    Record,
    UploadComplete,
    encode,
)
from blocks.blob.storage.versioned import DeleteMarkerFound, DeleteOutcome
from blocks.blob.storage.versions import HybridClock, restamped, version_of
from blocks.blob.store import LocalBlobStore
from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import InvalidArgument, NotFound

__all__ = ["TOMBSTONES_MAX", "RecordSink", "ReplicatedBlobStore"]

TOMBSTONES_MAX = 100_000
"""Deleted keys each node remembers (oldest forgotten first; ``index.tombstones_dropped``)."""
SETTLE_TIMEOUT_S = 30.0
"""Longest a read of a missing key waits for a change of it in flight here."""


class RecordSink(Protocol):
    """Where a node's own committed records go (``replication.Replicator``)."""

    def replicate(self, records: list[bytes]) -> None:
        """Return once a majority of the nodes hold ``records`` durably (this one counts);
        raises ``Unavailable`` otherwise."""
        ...

    def catch_up_key(self, bucket: str, key: str) -> bool:
        """Fetch what the peers hold of one key (and its bucket) and apply it here; returns
        whether anything changed."""
        ...

    def catch_up_upload(self, upload_id: str) -> bool:
        """Fetch what the peers hold of one multipart upload (its bucket, the upload and
        its parts) and apply it here; returns whether anything changed."""
        ...

    def read_bucket(self, bucket: str) -> Callable[[], None]:
        """Start reading ``bucket``'s record from the peers; the call returned applies here
        the newest among a majority of the nodes (this one counts), or raises
        ``Unavailable`` if a majority does not answer."""
        ...


class ReplicatedBlobStore(LocalBlobStore, PeerRecordsMixin):
    """A node's replica of the cluster's metadata (see the module docstring)."""

    tombstones_max = TOMBSTONES_MAX

    def __init__(self, *args: Any, node_id: str, clock: Clock | None = None, **kw: Any) -> None:
        if not node_id:
            raise InvalidArgument("a replica needs its node id")
        if kw.get("inline_bytes_max") != 0:
            # A peer installs a pushed record's manifest, not its body: an inline object
            # would read back empty there.
            raise InvalidArgument("a replica keeps bodies out of its records: inline_bytes_max=0")
        self.node_id = node_id
        self.hybrid_clock = HybridClock(clock or SystemClock())
        self.replicator: RecordSink | None = None
        self._versions: dict[Hashable, tuple[int, str]] = {}
        """Per key with a change in flight: the version of its latest change."""
        self._outbox = threading.local()
        self.remote_applied = 0
        self.remote_dropped = 0
        self.restamped = 0
        """Local changes of a key moved past a newer version held here (``_ordered``)."""
        super().__init__(*args, clock=self.hybrid_clock, **kw)
        self._settled = threading.Condition(self._lock)
        """Notified whenever a change finishes (``_finish``): reads wait on it for a
        change of their key that is in flight here (``_caught_up``)."""
        self.ledger.delete_unreferenced = False

    # -- ordering ----------------------------------------------------------------------------
    def _newest(self, entity: Hashable, record: Record) -> tuple[int, str] | None:
        in_flight = self._versions.get(entity)
        if in_flight is not None:
            return in_flight
        named: tuple[str, ...] = entity  # type: ignore[assignment]
        return self.index.version_of(*named[1:])

    def _ordered(self, entity: Hashable, record: RecordT) -> RecordT:
        """A local change of a key whose version is not past the newest this node holds of
        it (in flight or installed: a peer's push of a later stamp, or a change of this
        node stamped later but submitted first) is restamped past it, by the hybrid clock;
        a peer's record is journaled only if it still wins (a wait for compaction released
        the lock since ``apply_remote`` checked). Lock held; see the module docstring."""
        if getattr(self._outbox, "remote", False):
            if not self._wins(record):
                raise Overtaken
            return record
        if isinstance(record, BucketDelete):  # name the incarnation: every replica's tombstone
            return cast(RecordT, BucketDelete(record.name, self.index.buckets.get(record.name, 0)))
        version = version_of(record)
        newest = self._newest(entity, record) if version is not None else None
        if version is None or newest is None or version > newest:
            return record
        assert isinstance(record, ObjectPut | UploadComplete | ObjectDelete), record
        self.hybrid_clock.observe(newest[0])
        moved = restamped(record, self.hybrid_clock.now_ms())
        assert (version_of(moved) or version) > newest
        self.restamped += 1
        return cast(RecordT, moved)

    def _submit_ordered(
        self, entity: Hashable, record: RecordT
    ) -> tuple[RecordT, int, Future[int], int]:
        record, sequence, future, size = super()._submit_ordered(entity, record)
        version = version_of(record)
        if version is not None:
            self._versions[entity] = version
        if not getattr(self._outbox, "remote", False):
            pending: list[bytes] = self._pending()
            pending.append(encode(record))
        return record, sequence, future, size

    def _finish(self, entity: Hashable, sequence: int) -> bool:
        current = super()._finish(entity, sequence)
        if current:
            self._versions.pop(entity, None)
        self._settled.notify_all()
        return current

    def _pending(self) -> list[bytes]:
        pending: list[bytes] | None = getattr(self._outbox, "records", None)
        if pending is None:
            pending = self._outbox.records = []
        return pending

    def _replicated(self, call: Any, *args: Any, **kw: Any) -> Any:
        """Run a local change, then push what it journaled to a majority before returning.
        A change that failed here still pushes what it journaled (its outcome is unknown to
        the client either way) but keeps its own error."""
        self._outbox.records = []
        try:
            result = call(*args, **kw)
        except BaseException:
            records, self._outbox.records = self._pending(), []
            if records and self.replicator is not None:
                with contextlib.suppress(Exception):  # the change's own error is the one to report
                    self.replicator.replicate(records)
            raise
        records, self._outbox.records = self._pending(), []
        if records and self.replicator is not None:
            self.replicator.replicate(records)
        return result

    # -- the changes a client makes ----------------------------------------------------------
    def create_bucket(self, name: str, owner: str = "", acl: str = "") -> BucketInfo:
        info: BucketInfo = self._replicated(super().create_bucket, name, owner, acl)
        return info

    def set_bucket_acl(self, name: str, acl: str) -> None:
        self._status_caught_up(name)  # a change copies the other settings: the newest
        self._replicated(super().set_bucket_acl, name, acl)

    def set_bucket_versioning(self, name: str, status: str) -> None:
        self._status_caught_up(name)
        self._replicated(super().set_bucket_versioning, name, status)

    def bucket_versioning(self, name: str) -> str:
        """As on one node; a bucket missing here is first asked of the peers."""
        try:
            return super().bucket_versioning(name)
        except NotFound:
            self._caught_up(name, "")
        return super().bucket_versioning(name)

    def bucket_access(self, name: str) -> tuple[str, str] | None:
        """As on one node; a bucket missing here is first asked of the peers."""
        access = super().bucket_access(name)
        if access is None:
            self._caught_up(name, "")
            access = super().bucket_access(name)
        return access

    def delete_bucket(self, name: str) -> None:
        self._replicated(super().delete_bucket, name)

    def put_object(
        self, bucket: str, key: str, data: bytes | Iterable[bytes], **options: Any
    ) -> ObjectInfo:
        """As on one node (``options`` as there), once a conditional write knows the
        newest version of its key, with the bucket's settings read from a majority."""
        if options.get("condition") is not None and not self._knows(bucket, key):
            self._caught_up(bucket, key)  # the condition is checked against the newest
        if self.replicator is not None:  # finished in ``_stamp``, once the body is stored
            self._outbox.bucket_read = self.replicator.read_bucket(bucket)
        try:
            info: ObjectInfo = self._replicated(super().put_object, bucket, key, data, **options)
        finally:
            self._outbox.bucket_read = None
        return info

    def _stamp(self, bucket: str, key: str) -> tuple[int, str]:
        """As on one node, once the bucket's settings read by ``put_object`` are in (never
        with the lock held: the read may wait for the peers)."""
        finish: Callable[[], None] | None = getattr(self._outbox, "bucket_read", None)
        if finish is not None:
            self._outbox.bucket_read = None
            finish()
        return super()._stamp(bucket, key)

    def _status_caught_up(self, bucket: str) -> None:
        """Learn the bucket's newest settings from a majority before a write of one of its
        objects is stamped (see the module docstring); never with the lock held."""
        if self.replicator is not None:
            self.replicator.read_bucket(bucket)()

    def _knows(self, bucket: str, key: str) -> bool:
        with self._lock:
            return bool(self.index.versions(bucket, key)) if bucket in self.index.buckets else False

    def delete_object(self, bucket: str, key: str) -> bool:
        self._status_caught_up(bucket)
        if not self._knows(bucket, key):  # a key not heard of here is deleted all the same
            self._caught_up(bucket, key)
        existed: bool = self._replicated(super().delete_object, bucket, key)
        return existed

    def delete_version(self, bucket: str, key: str, version_id: str | None = None) -> DeleteOutcome:
        self._status_caught_up(bucket)
        if not self._knows(bucket, key):
            self._caught_up(bucket, key)
        outcome: DeleteOutcome = self._replicated(super().delete_version, bucket, key, version_id)
        return outcome

    # -- reads of keys this node has not heard of --------------------------------------------
    def _caught_up(self, bucket: str, key: str) -> None:
        """Fetch the peers' records of a key missing here, then wait for any change of it
        in flight here (a push being journaled: the peers' copy of the same change is
        dropped as not newer, and the read must not answer before it lands). The caller
        then reads again: whether anything changed is not worth knowing (the push may also
        have landed between the fetch and the wait)."""
        if self.replicator is not None:
            self.replicator.catch_up_key(bucket, key)
        self._settle(bucket, key)

    def _settle(self, bucket: str, key: str) -> None:
        """Wait (bounded) until no change of ``key`` (or of its bucket) is in flight here."""

        def quiet() -> bool:
            return not any(
                isinstance(e, tuple)
                and ((e[0] == "object" and e[1:3] == (bucket, key)) or e == ("bucket", bucket))
                for e in self._latest
            )

        with self._lock:
            self._settled.wait_for(quiet, SETTLE_TIMEOUT_S)

    def head_object(self, bucket: str, key: str, version_id: str | None = None) -> ObjectInfo:
        """As on one node; a key (or bucket) missing here is first asked of the peers, so a
        HEAD, GET or DELETE through any node sees every acknowledged write (it is on a
        majority, so on some other node than this one if not here). A key whose current
        version is a delete marker here is known here: not asked again."""
        info: ObjectInfo = self._read(super().head_object, bucket, key, version_id)
        return info

    def iter_object(
        self, bucket: str, key: str, *args: Any, **options: Any
    ) -> tuple[ObjectInfo, Iterator[bytes | memoryview]]:
        """As on one node (the byte range, the version id), asking the peers for a key
        missing here as ``head_object`` does."""
        found: tuple[ObjectInfo, Iterator[bytes | memoryview]]
        found = self._read(super().iter_object, bucket, key, *args, **options)
        return found

    def _read(
        self, call: Callable[..., Any], bucket: str, key: str, *args: Any, **options: Any
    ) -> Any:
        """``call(bucket, key, ...)``, once more after asking the peers if it found no such
        key or bucket here (a delete marker is an answer: not asked again)."""
        try:
            return call(bucket, key, *args, **options)
        except DeleteMarkerFound:
            raise
        except NotFound:
            self._caught_up(bucket, key)
        return call(bucket, key, *args, **options)

    def read_cached(self, *args: Any, **options: Any) -> None:
        """Never answers (``None``): a key or bucket missing here is asked of the peers,
        which only a worker thread may wait for."""
        return None

    def create_multipart_upload(self, bucket: str, key: str, **options: Any) -> str:
        upload_id: str = self._replicated(super().create_multipart_upload, bucket, key, **options)
        return upload_id

    def upload_part(
        self, bucket: str, key: str, upload_id: str, *args: Any, **options: Any
    ) -> PartInfo:
        """As on one node (the part number, the body, its checksums), once this node holds
        the upload."""
        with self._lock:
            held = upload_id in self.index.uploads
        if not held:  # created through another node: fetch it before the body is read
            self._upload_caught_up(upload_id)
        part: PartInfo = self._replicated(
            super().upload_part, bucket, key, upload_id, *args, **options
        )
        return part

    def complete_multipart_upload(
        self, bucket: str, key: str, upload_id: str, parts: list[tuple[int, str]], **options: Any
    ) -> ObjectInfo:
        self._status_caught_up(bucket)
        complete = super().complete_multipart_upload
        info: ObjectInfo = self._with_upload(
            upload_id, complete, bucket, key, upload_id, parts, **options
        )
        return info

    def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        self._with_upload(upload_id, super().abort_multipart_upload, bucket, key, upload_id)

    def _with_upload(self, upload_id: str, call: Any, *args: Any, **kw: Any) -> Any:
        """Run an upload's change; if it failed for an upload or a part this node has not
        received yet (created or uploaded through another node, its push still on the
        wire), fetch the upload from the peers and run it once more. Both fail before
        anything is journaled, and neither reads a body."""
        try:
            return self._replicated(call, *args, **kw)
        except (NotFound, InvalidArgument) as error:
            text = str(error)
            missing = text.startswith("no such upload") or "was not uploaded" in text
            if not missing:
                raise
            self._upload_caught_up(upload_id)
        return self._replicated(call, *args, **kw)

    def _upload_caught_up(self, upload_id: str) -> None:
        """Wait for changes of the upload in flight here (bounded), fetch the peers' records
        of it, and wait again (a push of the same part may have overtaken the fetched copy).
        The caller then tries again."""

        def quiet() -> bool:
            return not any(
                isinstance(e, tuple) and e[0] in ("upload", "part") and upload_id in e
                for e in self._latest
            )

        with self._lock:
            self._settled.wait_for(quiet, SETTLE_TIMEOUT_S)
        fetch = getattr(self.replicator, "catch_up_upload", None)
        if fetch is not None:
            fetch(upload_id)
        with self._lock:  # a push of the same part may land while the fetch does
            self._settled.wait_for(quiet, SETTLE_TIMEOUT_S)
