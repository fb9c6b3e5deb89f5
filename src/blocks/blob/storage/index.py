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

S3 versions. A key holds a list of versions (manifests, delete markers among them), newest
first by ``Manifest.order``; ``objects`` keeps the newest when it is an object, which is all
that GET, HEAD and listings of current objects read. A version with the id of one held (the
``null`` version, ""; nothing else repeats) replaces it; any other is added beside the
others, so versions arriving in any order make the same list. Keys with one version that is
an object (every key of a bucket never versioned) keep no list: ``history`` holds only the
others, with their keys sorted for ListObjectVersions.

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

from blocks.blob.storage.meta import ChunkRef, Manifest, PartRecord, UploadRecord
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
)

__all__ = ["SMALL_RECORD_BYTES", "MetaIndex"]

SMALL_RECORD_BYTES = 256
"""What a bucket, upload or part record is assumed to cost the journal (they are small)."""


class MetaIndex:
    """Buckets, objects, uploads and parts (see the module docstring)."""

    def __init__(self, *, tombstones_max: int = 0) -> None:
        self.tombstones_max = tombstones_max
        self.tombstones: OrderedDict[tuple[str, ...], tuple[int, str]] = OrderedDict()
        """(bucket, key) -> version of the delete that removed its ``null`` version, and
        (bucket, key, version id) -> that of the delete of that version (oldest first)."""
        self.tombstones_dropped = 0
        self.bucket_tombstones: OrderedDict[str, int] = OrderedDict()
        """bucket -> ``created_ms`` of the newest incarnation deleted (oldest first)."""
        self.finished_uploads: OrderedDict[str, int] = OrderedDict()
        """Ids of uploads completed or aborted, oldest first (the values are unused: 0)."""
        self.buckets: dict[str, int] = {}
        self.bucket_access: dict[str, tuple[str, str]] = {}
        """bucket -> (owner, acl), for buckets that have either (``records.BucketPut``)."""
        self.objects: dict[str, dict[str, Manifest]] = {}
        """bucket -> key -> the key's current version, when it is an object."""
        self.sorted_keys: dict[str, list[str]] = {}
        self.versioning: dict[str, str] = {}
        """bucket -> ``Enabled`` or ``Suspended``; absent for a bucket never versioned."""
        self.bucket_changes: dict[str, tuple[int, str]] = {}
        """bucket -> the version of its settings (``BucketPut.settings_version``), for
        buckets whose access or status changed since they were created."""
        self.history: dict[str, dict[str, list[Manifest]]] = {}
        """bucket -> key -> every version, newest first, for keys with more than one
        version or a delete marker (see the module docstring)."""
        self.history_keys: dict[str, list[str]] = {}
        self.uploads: dict[str, UploadRecord] = {}
        self.parts: dict[str, dict[int, PartRecord]] = {}
        self._object_bytes = 0  # sum of live manifests' record_bytes
        self._part_count = 0

    # -- buckets ---------------------------------------------------------------------------
    def put_bucket(self, record: BucketPut) -> None:
        """Hold the bucket as ``record`` has it (the caller checked that it is newer)."""
        self.add_bucket(record.name, record.created_ms, record.owner, record.acl, record.versioning)
        if record.changed_ms:
            self.bucket_changes[record.name] = record.settings_version
        else:
            self.bucket_changes.pop(record.name, None)

    def add_bucket(
        self, name: str, created_ms: int, owner: str = "", acl: str = "", versioning: str = ""
    ) -> None:
        self.bucket_tombstones.pop(name, None)  # a newer incarnation (the caller checked)
        if name not in self.buckets:
            self.objects[name] = {}
            self.sorted_keys[name] = []
            self.history[name] = {}
            self.history_keys[name] = []
        self.buckets[name] = created_ms
        if owner or acl:
            self.bucket_access[name] = (owner, acl)
        else:
            self.bucket_access.pop(name, None)
        if versioning:
            self.versioning[name] = versioning
        else:
            self.versioning.pop(name, None)

    def bucket_record(self, name: str) -> BucketPut:
        """The bucket as one record (it exists): incarnation, access and versioning."""
        owner, acl = self.bucket_access.get(name, ("", ""))
        changed_ms, changer = self.bucket_changes.get(name, (0, ""))
        status = self.versioning.get(name, "")
        return BucketPut(name, self.buckets[name], owner, acl, status, changed_ms, changer)

    def bucket_is_empty(self, name: str) -> bool:
        """No object and no version (a delete marker included) in the bucket."""
        return not self.objects.get(name) and not self.history.get(name)

    def remove_bucket(self, name: str, created_ms: int = 0) -> list[tuple[ChunkRef, ...]]:
        """Forget the bucket, its objects and its uploads; return their chunk lists. The
        tombstone (when kept) names the newer of ``created_ms`` and the incarnation held."""
        incarnation = max(created_ms, self.buckets.get(name, 0))
        if incarnation:
            self._remember(self.bucket_tombstones, name, incarnation)
        if name not in self.buckets:
            return []
        released: list[tuple[ChunkRef, ...]] = []
        for key in list(self.objects[name]) + list(self.history[name]):
            for manifest in self._set_versions(name, key, []):
                released.append(manifest.chunks)
        for upload_id in [u.upload_id for u in self.uploads.values() if u.bucket == name]:
            released += [part.chunks for part in self.drop_upload(upload_id)]
        del self.buckets[name], self.objects[name], self.sorted_keys[name]
        del self.history[name], self.history_keys[name]
        self.bucket_access.pop(name, None)
        self.versioning.pop(name, None)
        self.bucket_changes.pop(name, None)
        return released

    # -- objects ---------------------------------------------------------------------------
    def versions(self, bucket: str, key: str) -> list[Manifest]:
        """The key's versions, newest first (a copy); empty if it has none."""
        listed = self.history.get(bucket, {}).get(key)
        if listed is not None:
            return list(listed)
        current = self.objects.get(bucket, {}).get(key)
        return [current] if current is not None else []

    def _set_versions(self, bucket: str, key: str, versions: list[Manifest]) -> list[Manifest]:
        """Make ``versions`` (newest first) the key's; return the versions it let go."""
        old = self.versions(bucket, key)
        kept = {id(manifest) for manifest in versions}
        gone = [manifest for manifest in old if id(manifest) not in kept]
        self._object_bytes += sum(m.record_bytes for m in versions)
        self._object_bytes -= sum(m.record_bytes for m in old)
        index, keys = self.objects[bucket], self.sorted_keys[bucket]
        current = versions[0] if versions and not versions[0].delete_marker else None
        if current is None and key in index:
            del index[key]
            del keys[bisect.bisect_left(keys, key)]
        elif current is not None:
            if key not in index:
                bisect.insort(keys, key)
            index[key] = current
        history, history_keys = self.history[bucket], self.history_keys[bucket]
        plain = (len(versions) <= 1 and current is not None) or not versions
        if plain and key in history:
            del history[key]
            del history_keys[bisect.bisect_left(history_keys, key)]
        elif not plain:
            if key not in history:
                bisect.insort(history_keys, key)
            history[key] = versions
        return gone

    def put_object(self, manifest: Manifest) -> Manifest | None:
        """Install ``manifest`` (its bucket exists) among its key's versions; return the
        version of the same id it replaced."""
        bucket, key, version_id = manifest.bucket, manifest.key, manifest.version_id
        if not version_id:
            self.tombstones.pop((bucket, key), None)
        index = self.objects[bucket]
        old = index.get(key)
        plain = key not in self.history[bucket] and not manifest.delete_marker
        if plain and (old is None or old.version_id == version_id):  # the key's one version
            index[key] = manifest
            self._object_bytes += manifest.record_bytes
            if old is None:
                bisect.insort(self.sorted_keys[bucket], key)
            else:
                self._object_bytes -= old.record_bytes
            return old
        versions = [m for m in self.versions(bucket, key) if m.version_id != version_id]
        versions.append(manifest)
        versions.sort(key=_order, reverse=True)
        gone = self._set_versions(bucket, key, versions)
        return gone[0] if gone else None

    def remove_version(self, bucket: str, key: str, version_id: str = "") -> Manifest | None:
        """Remove the key's version ``version_id`` for good; return it (None if absent)."""
        if bucket not in self.objects:
            return None
        versions = self.versions(bucket, key)
        kept = [m for m in versions if m.version_id != version_id]
        if len(kept) == len(versions):
            return None
        gone = self._set_versions(bucket, key, kept)
        return gone[0]

    def find_version(self, bucket: str, key: str, version_id: str) -> Manifest | None:
        for manifest in self.versions(bucket, key):
            if manifest.version_id == version_id:
                return manifest
        return None

    def add_tombstone(
        self, bucket: str, key: str, version: tuple[int, str], version_id: str = ""
    ) -> None:
        """Remember that the key's version ``version_id`` was deleted at ``version`` (when
        tombstones are kept)."""
        if self.tombstones_max <= 0:
            return
        name = (bucket, key, version_id) if version_id else (bucket, key)
        self.tombstones[name] = version
        self.tombstones.move_to_end(name)
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

    def version_of(self, bucket: str, key: str, version_id: str = "") -> tuple[int, str] | None:
        """The version of the key's ``version_id`` (null: "") or of its tombstone; None if
        neither is held."""
        manifest = self.find_version(bucket, key, version_id)
        if manifest is not None:
            return manifest.version
        return self.tombstones.get((bucket, key, version_id) if version_id else (bucket, key))

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
            case BucketPut():
                self.put_bucket(record)
            case BucketDelete(name, created_ms):
                self.remove_bucket(name, created_ms)
            case ObjectPut(manifest, _) if manifest.bucket in self.buckets:
                self.put_object(manifest)
            case ObjectDelete(bucket, key, modified_ms, writer, version_id):
                self.remove_version(bucket, key, version_id)
                if modified_ms and bucket in self.buckets:
                    self.add_tombstone(bucket, key, (modified_ms, writer), version_id)
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
        """Every chunk list the index references (one per version and per part)."""
        for manifest in self.manifests():
            yield manifest.chunks
        for parts in self.parts.values():
            for part in parts.values():
                yield part.chunks

    def manifests(self) -> Iterator[Manifest]:
        """Every version of every key (non-current ones and delete markers included)."""
        for bucket, index in self.objects.items():
            history = self.history[bucket]
            for key, manifest in index.items():
                if key not in history:
                    yield manifest
            for versions in history.values():
                yield from versions

    def live_bytes(self) -> int:
        """About how many journal bytes the live state needs (what compaction keeps)."""
        small = len(self.buckets) + len(self.uploads) + self._part_count
        small += len(self.bucket_tombstones) + len(self.finished_uploads)
        return self._object_bytes + SMALL_RECORD_BYTES * small

    def snapshot(self, read_body: Callable[[int], bytes | memoryview]) -> Iterator[Record]:
        """The live state as records that replay to an equal index (buckets first, then
        objects, tombstones, uploads, parts); an inline object's body comes from
        ``read_body``."""
        for name in self.buckets:
            yield self.bucket_record(name)
        for manifest in self.manifests():
            body = read_body(manifest.inline_offset) if manifest.inline else None
            yield ObjectPut(manifest, body)
        for (bucket, key, *named), (modified_ms, writer) in self.tombstones.items():
            if bucket in self.buckets:
                yield ObjectDelete(bucket, key, modified_ms, writer, *named)
        for name, created_ms in self.bucket_tombstones.items():
            yield BucketDelete(name, created_ms)
        for upload_id in self.finished_uploads:
            yield UploadAbort(upload_id)
        for upload in self.uploads.values():
            yield UploadPut(upload)
        for parts in self.parts.values():
            for part in parts.values():
                yield PartPut(part)


def _order(manifest: Manifest) -> tuple[int, str, str]:
    return manifest.order
