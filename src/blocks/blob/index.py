"""The store's in-memory metadata index, and how journal records change it.

Theory of operation. ``MetaIndex`` holds everything the store knows about its names:
buckets, per bucket a dict of key -> manifest and a sorted key list (for listings), open
multipart uploads and their parts. It is a pure data structure: no I/O, no locks (the store
holds its own lock around every call).

Two kinds of callers change it. At open the store replays the journal through ``apply``,
record by record, last writer wins; records that no longer fit (an object in a bucket
deleted later in the log, a part of an aborted upload) are ignored, exactly as they were at
run time. While running, the store calls the finer methods (``put_object``,
``drop_upload``, ...) once a record is durable, and learns from their return values which
chunk references the index let go, so it can release them.

``snapshot`` lists the live state as records in an order that replays to the same index:
that is what compaction writes into a fresh journal.

In a cluster (``replica``) the index also keeps *tombstones*: the version of each deleted
key (at most ``tombstones_max``, oldest dropped first and counted), so that a write older
than the delete, arriving late from a peer, cannot bring the key back; the incarnation
(``created_ms``) of each deleted bucket, so that a node that missed the delete cannot bring
the bucket back; and the id of each finished (completed or aborted) upload, so that a node
that missed the end cannot list it again. Each kind holds at most ``tombstones_max``, oldest
dropped first and counted in ``tombstones_dropped``. They are part of the snapshot
(``BucketDelete`` and ``UploadAbort`` records). A single node keeps none
(``tombstones_max=0``).
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Callable, Iterator

from blocks.blob.meta import ChunkRef, Manifest, PartRecord, UploadRecord
from blocks.blob.records import (
    BucketDelete,
    BucketPut,
    ObjectDelete,
    ObjectPut,
    PartPut,
    Record,
    UploadAbort,
    UploadComplete,
    UploadPut,
)

__all__ = ["SMALL_RECORD_BYTES", "MetaIndex"]

SMALL_RECORD_BYTES = 256
"""What a bucket, upload or part record is assumed to cost the journal (they are small)."""


class MetaIndex:
    """Buckets, objects, uploads and parts (see the module docstring)."""

    def __init__(self, *, tombstones_max: int = 0) -> None:
        self.tombstones_max = tombstones_max
        self.tombstones: OrderedDict[tuple[str, str], tuple[int, str]] = OrderedDict()
        """(bucket, key) -> version of the delete that removed it (oldest first)."""
        self.tombstones_dropped = 0
        self.bucket_tombstones: OrderedDict[str, int] = OrderedDict()
        """bucket -> ``created_ms`` of the newest incarnation deleted (oldest first)."""
        self.finished_uploads: OrderedDict[str, int] = OrderedDict()
        """Ids of uploads completed or aborted, oldest first (the values are unused: 0)."""
        self.buckets: dict[str, int] = {}
        self.bucket_access: dict[str, tuple[str, str]] = {}
        """bucket -> (owner, acl), for buckets that have either (``records.BucketPut``)."""
        self.objects: dict[str, dict[str, Manifest]] = {}
        self.sorted_keys: dict[str, list[str]] = {}
        self.uploads: dict[str, UploadRecord] = {}
        self.parts: dict[str, dict[int, PartRecord]] = {}
        self._object_bytes = 0  # sum of live manifests' record_bytes
        self._part_count = 0

    # -- buckets ---------------------------------------------------------------------------
    def add_bucket(self, name: str, created_ms: int, owner: str = "", acl: str = "") -> None:
        self.bucket_tombstones.pop(name, None)  # a newer incarnation (the caller checked)
        if name not in self.buckets:
            self.objects[name] = {}
            self.sorted_keys[name] = []
        self.buckets[name] = created_ms
        if owner or acl:
            self.bucket_access[name] = (owner, acl)
        else:
            self.bucket_access.pop(name, None)

    def remove_bucket(self, name: str, created_ms: int = 0) -> list[tuple[ChunkRef, ...]]:
        """Forget the bucket, its objects and its uploads; return their chunk lists. The
        tombstone (when kept) names the newer of ``created_ms`` and the incarnation held."""
        incarnation = max(created_ms, self.buckets.get(name, 0))
        if incarnation:
            self._remember(self.bucket_tombstones, name, incarnation)
        if name not in self.buckets:
            return []
        released = [m.chunks for m in self.objects[name].values()]
        self._object_bytes -= sum(m.record_bytes for m in self.objects[name].values())
        for upload_id in [u.upload_id for u in self.uploads.values() if u.bucket == name]:
            released += [part.chunks for part in self.drop_upload(upload_id)]
        del self.buckets[name], self.objects[name], self.sorted_keys[name]
        self.bucket_access.pop(name, None)
        return released

    # -- objects ---------------------------------------------------------------------------
    def put_object(self, manifest: Manifest) -> Manifest | None:
        """Install ``manifest`` (its bucket exists); return the one it replaced."""
        index = self.objects[manifest.bucket]
        old = index.get(manifest.key)
        self.tombstones.pop((manifest.bucket, manifest.key), None)
        index[manifest.key] = manifest
        self._object_bytes += manifest.record_bytes
        if old is None:
            bisect.insort(self.sorted_keys[manifest.bucket], manifest.key)
        else:
            self._object_bytes -= old.record_bytes
        return old

    def remove_object(self, bucket: str, key: str) -> Manifest | None:
        index = self.objects.get(bucket)
        manifest = index.pop(key, None) if index is not None else None
        if manifest is not None:
            keys = self.sorted_keys[bucket]
            del keys[bisect.bisect_left(keys, key)]
            self._object_bytes -= manifest.record_bytes
        return manifest

    def add_tombstone(self, bucket: str, key: str, version: tuple[int, str]) -> None:
        """Remember that ``key`` was deleted at ``version`` (when tombstones are kept)."""
        if self.tombstones_max <= 0:
            return
        self.tombstones[(bucket, key)] = version
        self.tombstones.move_to_end((bucket, key))
        while len(self.tombstones) > self.tombstones_max:
            self.tombstones.popitem(last=False)
            self.tombstones_dropped += 1

    def bucket_buried(self, name: str, created_ms: int) -> bool:
        """Whether the incarnation of ``name`` made at ``created_ms`` was deleted."""
        deleted = self.bucket_tombstones.get(name)
        return deleted is not None and created_ms <= deleted

    def _remember(self, tombstones: OrderedDict[str, int], name: str, value: int) -> None:
        if self.tombstones_max <= 0:
            return
        tombstones[name] = max(value, tombstones.get(name, value))
        tombstones.move_to_end(name)
        while len(tombstones) > self.tombstones_max:
            tombstones.popitem(last=False)
            self.tombstones_dropped += 1

    def version_of(self, bucket: str, key: str) -> tuple[int, str] | None:
        """The version of the key's live object or of its tombstone; None if neither."""
        manifest = self.objects.get(bucket, {}).get(key)
        if manifest is not None:
            return manifest.version
        return self.tombstones.get((bucket, key))

    # -- uploads ---------------------------------------------------------------------------
    def add_upload(self, upload: UploadRecord) -> None:
        self.uploads[upload.upload_id] = upload
        self.parts.setdefault(upload.upload_id, {})

    def put_part(self, part: PartRecord) -> PartRecord | None:
        """Install ``part`` (its upload exists); return the part it replaced."""
        parts = self.parts[part.upload_id]
        old = parts.get(part.number)
        parts[part.number] = part
        self._part_count += old is None
        return old

    def drop_upload(self, upload_id: str) -> list[PartRecord]:
        """Forget the upload, and remember it finished (when tombstones are kept); return
        its parts (whose chunks the caller releases)."""
        self._remember(self.finished_uploads, upload_id, 0)
        if self.uploads.pop(upload_id, None) is None:
            return []
        parts = list(self.parts.pop(upload_id).values())
        self._part_count -= len(parts)
        return parts

    # -- replay ----------------------------------------------------------------------------
    def apply(self, record: Record) -> None:
        """Replay one journal record (see the module docstring); ignores misfits."""
        match record:
            case BucketPut(name, created_ms, owner, acl):
                self.add_bucket(name, created_ms, owner, acl)
            case BucketDelete(name, created_ms):
                self.remove_bucket(name, created_ms)
            case ObjectPut(manifest, _) if manifest.bucket in self.buckets:
                self.put_object(manifest)
            case ObjectDelete(bucket, key, modified_ms, writer):
                self.remove_object(bucket, key)
                if modified_ms and bucket in self.buckets:
                    self.add_tombstone(bucket, key, (modified_ms, writer))
            case UploadPut(upload) if (
                upload.bucket in self.buckets and upload.upload_id not in self.finished_uploads
            ):
                self.add_upload(upload)
            case PartPut(part) if part.upload_id in self.uploads:
                self.put_part(part)
            case UploadComplete(upload_id, manifest):
                self.drop_upload(upload_id)
                if manifest.bucket in self.buckets:
                    self.put_object(manifest)
            case UploadAbort(upload_id):
                self.drop_upload(upload_id)

    def chunk_lists(self) -> Iterator[tuple[ChunkRef, ...]]:
        """Every chunk list the index references (one per manifest and per part)."""
        for index in self.objects.values():
            for manifest in index.values():
                yield manifest.chunks
        for parts in self.parts.values():
            for part in parts.values():
                yield part.chunks

    def live_bytes(self) -> int:
        """About how many journal bytes the live state needs (what compaction keeps)."""
        small = len(self.buckets) + len(self.uploads) + self._part_count
        small += len(self.bucket_tombstones) + len(self.finished_uploads)
        return self._object_bytes + SMALL_RECORD_BYTES * small

    def snapshot(self, read_body: Callable[[int], bytes | memoryview]) -> Iterator[Record]:
        """The live state as records that replay to an equal index (buckets first, then
        objects, tombstones, uploads, parts); an inline object's body comes from
        ``read_body``."""
        for name, created_ms in self.buckets.items():
            yield BucketPut(name, created_ms, *self.bucket_access.get(name, ("", "")))
        for index in self.objects.values():
            for manifest in index.values():
                body = read_body(manifest.inline_offset) if manifest.inline else None
                yield ObjectPut(manifest, body)
        for (bucket, key), (modified_ms, writer) in self.tombstones.items():
            if bucket in self.buckets:
                yield ObjectDelete(bucket, key, modified_ms, writer)
        for name, created_ms in self.bucket_tombstones.items():
            yield BucketDelete(name, created_ms)
        for upload_id in self.finished_uploads:
            yield UploadAbort(upload_id)
        for upload in self.uploads.values():
            yield UploadPut(upload)
        for parts in self.parts.values():
            for part in parts.values():
                yield PartPut(part)
