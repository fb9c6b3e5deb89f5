"""S3 object versions in ``LocalBlobStore``: version ids, delete markers, reads of one
version, deletes, and ListObjectVersions.

Theory of operation. Every object is a version of its key (``Manifest.version_id``, "" for
the ``null`` version); the index keeps a key's versions newest first (``index``). What a
write makes depends on its bucket's status (``buckets``):

* never versioned: every write is the null version and replaces it (plain S3 buckets);
* ``Enabled``: every PUT, copy or completed upload is a new version with a fresh id, and a
  DELETE without a version id adds a *delete marker* with a fresh id;
* ``Suspended``: writes and delete markers get the null version, replacing an earlier one.

A DELETE naming a version id removes that version for good (``records.ObjectDelete`` with
the id), releasing its chunks: only then, or when a null version is replaced, does a
version stop holding its chunks, so the collector keeps every chunk any version names.

Ids sort with the time they were made (a 64-bit counter that starts from the clock's
milliseconds, then 64 random bits): with the writer's node id they break ties between
versions of one millisecond. A version of a key that has others is stamped at least one
millisecond after the newest of them, so the one written last is the current one even if
the wall clock stepped back.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from blocks.blob.api import ObjectInfo
from blocks.blob.listing import MAX_KEYS_MAX, after_prefix, check_key
from blocks.blob.storage.buckets import ENABLED
from blocks.blob.storage.meta import Manifest
from blocks.blob.storage.records import ObjectDelete, ObjectPut
from blocks.blob.storage.store_parts import StoreParts
from blocks.blob.storage.versions import object_entity
from blocks.core.errors import InvalidArgument, NotFound

__all__ = [
    "NULL_VERSION",
    "DeleteMarkerFound",
    "DeleteOutcome",
    "VersionInfo",
    "VersionPage",
    "VersionsMixin",
    "info_of",
    "stored_version_id",
]

NULL_VERSION = "null"
"""The null version's id on the wire (stored as "")."""
_VERSION_ID_LENGTH = 32


class DeleteMarkerFound(NotFound):
    """The version read is a delete marker: the key's current one (S3's 404 NoSuchKey) or
    one named by its id (S3's 405 MethodNotAllowed). ``version_id`` is the marker's."""

    def __init__(self, message: str, version_id: str, named: bool) -> None:
        super().__init__(message)
        self.version_id = version_id
        self.named = named


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One entry of ListObjectVersions: a version of an object, or a delete marker."""

    key: str
    version_id: str
    is_latest: bool
    delete_marker: bool
    modified_ms: int
    etag: str = ""
    size: int = 0


@dataclass(frozen=True, slots=True)
class VersionPage:
    """One page of versions; the next page starts after (``next_key_marker``,
    ``next_version_id_marker``), set exactly when ``is_truncated`` is."""

    versions: tuple[VersionInfo, ...]
    common_prefixes: tuple[str, ...]
    is_truncated: bool
    next_key_marker: str = ""
    next_version_id_marker: str = ""


@dataclass(frozen=True, slots=True)
class DeleteOutcome:
    """What a DELETE did: the version it removed or the delete marker it wrote
    (``version_id``, "" in a bucket never versioned) and whether that is a marker."""

    version_id: str
    delete_marker: bool


def stored_version_id(version_id: str) -> str:
    """The id a version is kept under ("" for ``null``); ``InvalidArgument`` for text that
    is no version id of ours (S3's "Invalid version id specified")."""
    if version_id == NULL_VERSION:
        return ""
    if len(version_id) != _VERSION_ID_LENGTH or not all(
        c in "0123456789abcdef" for c in version_id
    ):
        raise InvalidArgument(f"invalid version id {version_id!r}")
    return version_id


def info_of(manifest: Manifest, versioned: bool) -> ObjectInfo:
    """What HEAD returns of ``manifest``; ``versioned``: its bucket has a status."""
    shown = manifest.version_id or (NULL_VERSION if versioned else "")
    return ObjectInfo(
        bucket=manifest.bucket,
        key=manifest.key,
        size=manifest.size,
        etag=manifest.etag,
        content_type=manifest.content_type,
        modified_ms=manifest.modified_ms,
        metadata=dict(manifest.metadata),
        parts_count=manifest.parts_count,
        checksums=dict(manifest.checksums),
        headers=dict(manifest.headers),
        part_sizes=manifest.part_sizes,
        version_id=shown,
    )


class VersionsMixin(StoreParts):
    """The versions half of ``LocalBlobStore`` (what it uses of the other halves: ``StoreParts``)."""

    _last_version: int

    # -- stamping new versions ---------------------------------------------------------------
    def _new_version_id(self, now_ms: int) -> str:
        with self._lock:
            self._last_version = max(self._last_version + 1, now_ms << 16)
            return f"{self._last_version & (2**64 - 1):016x}{self.rng.getrandbits(64):016x}"

    def _stamp(self, bucket: str, key: str) -> tuple[int, str]:
        """(modified_ms, version id) for a new version of ``key`` (see the module
        docstring); a bucket never versioned costs one clock read."""
        now_ms = self.clock.now_ms()
        status = self.index.versioning.get(bucket)
        if not status:
            return now_ms, ""
        with self._lock:
            versions = self.index.versions(bucket, key)
        if versions:
            now_ms = max(now_ms, versions[0].modified_ms + 1)
        return now_ms, self._new_version_id(now_ms) if status == ENABLED else ""

    def _info(self, manifest: Manifest) -> ObjectInfo:
        return info_of(manifest, manifest.bucket in self.index.versioning)

    # -- reads -------------------------------------------------------------------------------
    def _manifest(self, bucket: str, key: str, version_id: str | None = None) -> Manifest:
        """The key's current object, or its version ``version_id`` (``null`` included);
        ``NotFound`` (``DeleteMarkerFound`` for a marker) if there is none."""
        check_key(key)
        stored = None if version_id is None else stored_version_id(version_id)
        with self._lock:
            self._check_open()
            index = self._bucket_index(bucket)
            if stored is None:
                manifest = index.get(key)
                if manifest is None:
                    versions = self.index.history[bucket].get(key)
                    if versions and versions[0].delete_marker:
                        raise DeleteMarkerFound(
                            f"no such key {key!r} in bucket {bucket!r}",
                            self._info(versions[0]).version_id,
                            named=False,
                        )
            else:
                manifest = self.index.find_version(bucket, key, stored)
                if manifest is None:
                    raise NotFound(f"no such version {version_id!r} of key {key!r}")
                if manifest.delete_marker:
                    raise DeleteMarkerFound(
                        f"version {version_id!r} of {key!r} is a delete marker",
                        self._info(manifest).version_id,
                        named=True,
                    )
        if manifest is None:
            raise NotFound(f"no such key {key!r} in bucket {bucket!r}")
        return manifest

    # -- deletes -----------------------------------------------------------------------------
    def delete_object(self, bucket: str, key: str) -> bool:
        """As ``BlobStore.delete_object``; in a versioned bucket it writes a delete marker
        (``delete_version``). True if the key had a current object."""
        check_key(key)
        with self._lock:
            existed = key in self._bucket_index(bucket)
        self._delete(bucket, key, None)
        return existed

    def delete_version(self, bucket: str, key: str, version_id: str | None = None) -> DeleteOutcome:
        """S3's DeleteObject: without ``version_id``, remove the object (a bucket never
        versioned) or write a delete marker (see the module docstring); with one (``null``
        included), remove that version for good. Deleting what is absent changes nothing."""
        return self._delete(bucket, key, version_id)

    def _delete(self, bucket: str, key: str, version_id: str | None) -> DeleteOutcome:
        check_key(key)
        stored = None if version_id is None else stored_version_id(version_id)
        with self._lock:
            self._check_open()
            self._bucket_index(bucket)
            status = self.index.versioning.get(bucket, "")
        if stored is None and status:
            return self._write_delete_marker(bucket, key)
        return self._remove_version(bucket, key, stored or "", status)

    def _write_delete_marker(self, bucket: str, key: str) -> DeleteOutcome:
        modified_ms, version_id = self._stamp(bucket, key)
        marker = Manifest(
            bucket=bucket,
            key=key,
            size=0,
            etag="",
            content_type="",
            modified_ms=modified_ms,
            chunks=(),
            writer=self.node_id,
            version_id=version_id,
            delete_marker=True,
        )
        self._commit_object(ObjectPut(marker), [])
        return DeleteOutcome(version_id or NULL_VERSION, True)

    def _remove_version(self, bucket: str, key: str, stored: str, status: str) -> DeleteOutcome:
        entity = object_entity(bucket, key, stored)
        with self._lock:
            self._check_open()
            held = self.index.find_version(bucket, key, stored)
            shown = stored or (NULL_VERSION if status else "")
            if held is None and not self._busy(entity):
                return DeleteOutcome(shown, False)
            record = ObjectDelete(bucket, key, self.clock.now_ms(), self.node_id, stored)
            record, sequence, future, _ = self._submit_ordered(entity, record)
        self._durable(entity, sequence, future)
        with self._lock:
            current = self._finish(entity, sequence)
            removed = self.index.remove_version(bucket, key, stored) if current else None
            if current and bucket in self.index.buckets:
                self.index.add_tombstone(bucket, key, record.version, stored)
            self._maybe_compact()
        if removed is not None:
            self.ledger.release(removed.chunks)
        return DeleteOutcome(shown, removed is not None and removed.delete_marker)

    # -- ListObjectVersions ------------------------------------------------------------------
    def list_object_versions(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str = "",
        max_keys: int = 1000,
        key_marker: str = "",
        version_id_marker: str = "",
    ) -> VersionPage:
        """Every version and delete marker under ``prefix``, by key, newest first within a
        key; with a ``delimiter``, keys that contain it after the prefix roll up into one
        common prefix each. A page holds at most ``max_keys`` entries (0..1000) and starts
        after ``key_marker`` (after its version ``version_id_marker`` when given)."""
        if not isinstance(max_keys, int) or not 0 <= max_keys <= MAX_KEYS_MAX:
            raise InvalidArgument(f"max_keys must be in [0, {MAX_KEYS_MAX}]")
        after_version = stored_version_id(version_id_marker) if version_id_marker else None
        with self._lock:
            self._check_open()
            self._bucket_index(bucket)
            if max_keys == 0:
                return VersionPage((), (), False)
            start = max(key_marker, prefix)
            inclusive = after_version is not None or start != key_marker or not key_marker
            entries: list[VersionInfo] = []
            prefixes: list[str] = []
            key = self._next_key(bucket, start, inclusive)
            while key is not None and key.startswith(prefix):
                cut = key.find(delimiter, len(prefix)) if delimiter else -1
                if cut >= 0:
                    if len(entries) + len(prefixes) >= max_keys:
                        return _truncated(entries, prefixes)
                    prefixes.append(key[: cut + len(delimiter)])
                    key = self._next_key(bucket, prefixes[-1], True, skip_prefix=True)
                    continue
                versions = self.index.versions(bucket, key)
                skip = 0
                if key == key_marker and after_version is not None:
                    ids = [m.version_id for m in versions]
                    skip = ids.index(after_version) + 1 if after_version in ids else 0
                for position, manifest in enumerate(versions[skip:], skip):
                    if len(entries) + len(prefixes) >= max_keys:
                        return _truncated(entries, prefixes)
                    entries.append(_entry(manifest, position == 0))
                key = self._next_key(bucket, key, False)
        return VersionPage(tuple(entries), tuple(prefixes), False)

    def _next_key(
        self, bucket: str, start: str, inclusive: bool, *, skip_prefix: bool = False
    ) -> str | None:
        """The first key with any version from ``start`` (lock held); with ``skip_prefix``,
        the first that does not start with ``start``. Binary searches only: a rolled-up
        prefix is skipped whole, however many keys it holds."""
        found = []
        for keys in (self.index.sorted_keys[bucket], self.index.history_keys[bucket]):
            position = (bisect.bisect_left if inclusive else bisect.bisect_right)(keys, start)
            if skip_prefix:
                position = after_prefix(keys, start, position)
            if position < len(keys):
                found.append(keys[position])
        return min(found) if found else None


def _entry(manifest: Manifest, is_latest: bool) -> VersionInfo:
    return VersionInfo(
        key=manifest.key,
        version_id=manifest.version_id or NULL_VERSION,  # a listing names null versions too
        is_latest=is_latest,
        delete_marker=manifest.delete_marker,
        modified_ms=manifest.modified_ms,
        etag=manifest.etag,
        size=manifest.size,
    )


def _truncated(entries: list[VersionInfo], prefixes: list[str]) -> VersionPage:
    """A full page: the markers name its last entry (a common prefix's own name)."""
    last_prefix = prefixes[-1] if prefixes else ""
    last_entry = entries[-1] if entries else None
    if last_entry is not None and last_entry.key > last_prefix:
        return VersionPage(
            tuple(entries), tuple(prefixes), True, last_entry.key, last_entry.version_id
        )
    return VersionPage(tuple(entries), tuple(prefixes), True, last_prefix, "")
