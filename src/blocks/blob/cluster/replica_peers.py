"""The peer-facing half of a metadata replica: records a peer pushed or a sync pulled, and
what peers ask of this node.

Theory of operation. ``apply_remote`` takes a record a peer committed: unless this node
holds the same change or a newer one (``_wins``: versions for a key's changes, incarnations
and then settings versions for buckets, finished-upload tombstones for uploads), it journals
the record here, waits for it to be durable and applies it to the index (``_install``),
releasing what it replaced. ``snapshot_records``, ``key_records`` and ``bucket_records``
answer a peer's sync, a peer's read of one key and a peer's read of a bucket's status;
``referenced`` answers the cluster collector. ``replica.ReplicatedBlobStore`` mixes this in
after ``LocalBlobStore``, whose commit path it uses.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Hashable, Iterable, Iterator

from blocks.blob.storage.meta import ChunkRef
from blocks.blob.storage.records import (
    BucketDelete,
    BucketPut,
    ObjectDelete,
    ObjectPut,
    PartPut,
    Record,
    UploadAbort,
    UploadComplete,
    UploadPut,
    decode,
    encode,
)
from blocks.blob.storage.store_parts import StoreParts
from blocks.blob.storage.versions import HybridClock, entity_of, version_of
from blocks.core.errors import NotFound

__all__ = ["Overtaken", "PeerRecordsMixin"]


class Overtaken(Exception):
    """A peer's record that no longer wins once its turn to be journaled came (raised by
    ``_ordered`` under the lock, caught by ``apply_remote``: dropped, as if it had lost at
    once)."""


class PeerRecordsMixin(StoreParts):
    """Changes from peers and answers to them (see the module docstring)."""

    _outbox: threading.local
    hybrid_clock: HybridClock
    remote_applied: int
    remote_dropped: int

    def _newest(self, entity: Hashable, record: Record) -> tuple[int, str] | None:
        raise NotImplementedError

    # -- changes from peers ------------------------------------------------------------------
    def _wins(self, record: Record) -> bool:
        """Whether a peer's ``record`` changes anything here (lock held). ``NotFound`` when
        it names a bucket or an upload this node does not hold (yet): it cannot be kept."""
        index = self.index
        match record:
            case BucketPut(name, created_ms):
                if index.bucket_buried(name, created_ms):
                    return False  # from a node that missed the delete
                if name not in index.buckets:
                    return True
                current = index.bucket_record(name)
                if current.created_ms != created_ms:
                    return created_ms > current.created_ms  # the newer incarnation
                if record.settings_version != current.settings_version:
                    return record.settings_version > current.settings_version
                return record != current  # unversioned records (older journals): arrival order
            case BucketDelete(name, created_ms):
                held = index.buckets.get(name)
                if held is not None:
                    return not created_ms or held <= created_ms  # never a newer incarnation
                return bool(created_ms) and not index.bucket_buried(name, created_ms)
            case UploadPut(upload):
                if upload.upload_id in index.finished_uploads:
                    return False  # from a node that missed its end
                self._require_bucket(upload.bucket)
                return upload.upload_id not in index.uploads
            case PartPut(part):
                known = index.parts.get(part.upload_id)
                if known is None and part.upload_id in index.finished_uploads:
                    return False
                if known is None:
                    raise NotFound(f"no upload {part.upload_id!r} here")
                return known.get(part.number) != part
            case UploadAbort(upload_id):
                return upload_id in index.uploads or upload_id not in index.finished_uploads
        version = version_of(record)
        entity = entity_of(record)
        if version is None:
            return False
        self._require_bucket(entity[1])  # type: ignore[index]
        newest = self._newest(entity, record)
        return newest is None or version > newest

    def _require_bucket(self, bucket: str) -> None:
        if bucket not in self.index.buckets:
            raise NotFound(f"no bucket {bucket!r} here")

    def apply_remote(self, data: bytes) -> bool:
        """Journal and apply a record a peer committed, unless what this node holds is as new
        or newer; returns whether it changed anything, once the record is durable here.
        Raises ``Corruption`` for bytes that are not a record and ``NotFound`` for a record
        whose bucket or upload this node does not hold."""
        record = decode(data)
        version = version_of(record)
        if version is not None:
            self.hybrid_clock.observe(version[0])
        if isinstance(record, BucketPut | BucketDelete):  # a re-created bucket is newer
            self.hybrid_clock.observe(record.created_ms)
        if isinstance(record, BucketPut):  # and so is a later change of its settings
            self.hybrid_clock.observe(record.changed_ms)
        entity = entity_of(record)
        with self._lock:
            self._check_open()
            if not self._wins(record):
                self.remote_dropped += 1
                return False
            outer, self._outbox.remote = getattr(self._outbox, "remote", False), True
            try:
                sequence, future, size = self._submit(entity, record)
            except Overtaken:
                self.remote_dropped += 1
                return False
            finally:
                self._outbox.remote = outer
        self._durable(entity, sequence, future)
        with self._lock:
            released = self._install(record, size) if self._finish(entity, sequence) else []
            self._maybe_compact()
        for chunks in released:
            self.ledger.release(chunks)
        self.remote_applied += 1
        return True

    def _install(self, record: Record, size: int) -> list[tuple[ChunkRef, ...]]:
        """Apply a durable peer record to the index (lock held); the chunk lists it let go."""
        index = self.index
        released: list[tuple[ChunkRef, ...]] = []
        match record:
            case ObjectPut(manifest, _) | UploadComplete(_, manifest):
                if isinstance(record, UploadComplete):
                    released += [part.chunks for part in index.drop_upload(record.upload_id)]
                if manifest.bucket in index.buckets:
                    self.ledger.adopt(manifest.chunks)
                    old = index.put_object(dataclasses.replace(manifest, record_bytes=size))
                    released.append(old.chunks if old is not None else ())
            case ObjectDelete(bucket, key, _, _, version_id):
                removed = index.remove_version(bucket, key, version_id)
                if bucket in index.buckets:
                    index.add_tombstone(bucket, key, record.version, version_id)
                released.append(removed.chunks if removed is not None else ())
            case BucketPut():
                index.put_bucket(record)
            case BucketDelete(name, created_ms):
                released += index.remove_bucket(name, created_ms)
            case UploadPut(upload) if upload.bucket in index.buckets:
                index.add_upload(upload)
            case PartPut(part) if part.upload_id in index.uploads:
                self.ledger.adopt(part.chunks)
                old_part = index.put_part(part)
                released.append(old_part.chunks if old_part is not None else ())
            case UploadAbort(upload_id):
                released += [part.chunks for part in index.drop_upload(upload_id)]
        return released

    # -- what peers ask ----------------------------------------------------------------------
    def snapshot_records(self) -> Iterator[bytes]:
        """The live metadata as records (buckets, objects, tombstones, uploads, parts), as a
        sync sends it to a peer. Taken under the lock, in one piece."""
        with self._lock:
            self._check_open()
            records = [encode(r) for r in self.index.snapshot(self._read_inline)]
        return iter(records)

    def bucket_records(self, bucket: str) -> list[bytes]:
        """The bucket's record as this node holds it (nothing if it holds no such bucket):
        what a peer reads from a majority before stamping a write (``replica``)."""
        with self._lock:
            self._check_open()
            if bucket not in self.index.buckets:
                return []
            return [encode(self.index.bucket_record(bucket))]

    def key_records(self, bucket: str, key: str) -> list[bytes]:
        """What this node holds of one key, as records: its bucket, then every version of
        it (delete markers included) and the tombstone of its null version (nothing if the
        bucket is unknown here)."""
        with self._lock:
            self._check_open()
            if bucket not in self.index.buckets:
                return []
            records: list[Record] = [self.index.bucket_record(bucket)]
            records += [ObjectPut(manifest) for manifest in self.index.versions(bucket, key)]
            tombstone = self.index.tombstones.get((bucket, key))
            if tombstone is not None:
                records.append(ObjectDelete(bucket, key, *tombstone))
            return [encode(record) for record in records]

    def upload_records(self, upload_id: str) -> list[bytes]:
        """What this node holds of one multipart upload in progress, as records: its bucket,
        the upload, its parts (nothing if it holds no such upload)."""
        with self._lock:
            self._check_open()
            upload = self.index.uploads.get(upload_id)
            if upload is None or upload.bucket not in self.index.buckets:
                return []
            records: list[Record] = [self.index.bucket_record(upload.bucket), UploadPut(upload)]
            records += [PartPut(part) for part in self.index.parts[upload_id].values()]
            return [encode(record) for record in records]

    def referenced(self, chunk_ids: Iterable[str]) -> list[str]:
        """Which of ``chunk_ids`` this node's metadata or an operation in flight here holds
        (what the cluster collector asks every node before deleting anything)."""
        return [chunk_id for chunk_id in chunk_ids if self.ledger.count(chunk_id) > 0]
