"""Buckets of ``LocalBlobStore``: creation, deletion, access and versioning status.

Theory of operation. A bucket is one ``records.BucketPut`` in the journal (its incarnation
``created_ms``, owner, canned policy and S3 versioning status); changing its policy or its
versioning journals the whole record again, so replay and a peer's copy always see the
bucket whole. Each change carries a version (``BucketPut.settings_version``: the clock's
time, past the version it replaces, and this node's id), by which replicas order changes of
one incarnation. Bucket changes are rare and hold the store's lock across their commit, so no
other change of the same bucket overtakes one. A bucket is empty only when it holds no
object, no version (a delete marker included) and no upload in progress.

Versioning follows S3: a bucket starts with no status, and once ``Enabled`` can only be
``Suspended`` again, never return to no status.
"""

from __future__ import annotations

from blocks.blob.api import BucketInfo
from blocks.blob.errors import BucketBusy, BucketExists, BucketNotEmpty
from blocks.blob.listing import check_bucket_name
from blocks.blob.storage.records import BucketDelete, BucketPut
from blocks.blob.storage.store_parts import StoreParts
from blocks.core.errors import InvalidArgument, NotFound

__all__ = ["ENABLED", "SUSPENDED", "BucketMixin"]

ENABLED = "Enabled"
SUSPENDED = "Suspended"


class BucketMixin(StoreParts):
    """The bucket half of ``LocalBlobStore`` (what it uses of the other halves: ``StoreParts``)."""

    def _commit_bucket(self, record: BucketPut | BucketDelete) -> None:
        """Journal a bucket change and wait for it (lock held throughout)."""
        entity = ("bucket", record.name)
        sequence, future, _ = self._submit(entity, record)
        try:
            future.result()
        finally:
            self._finish(entity, sequence)

    def create_bucket(self, name: str, owner: str = "", acl: str = "") -> BucketInfo:
        """As ``BlobStore.create_bucket``; ``owner`` and ``acl`` are kept with the bucket
        (``bucket_access``) for the S3 front's access checks."""
        check_bucket_name(name)
        with self._lock:  # rare: held across the commit, so no bucket change overtakes one
            self._check_open()
            if name in self.index.buckets or self._busy(("bucket", name)):
                raise BucketExists(f"bucket {name!r} already exists")
            created_ms = self.clock.now_ms()
            self._commit_bucket(BucketPut(name, created_ms, owner, acl))
            self.index.add_bucket(name, created_ms, owner, acl)
            return BucketInfo(name, created_ms)

    def bucket_access(self, name: str) -> tuple[str, str] | None:
        """The bucket's (owner, acl) as created or last set ("" for none); ``None`` if
        there is no such bucket."""
        with self._lock:
            self._check_open()
            if name not in self.index.buckets:
                return None
            return self.index.bucket_access.get(name, ("", ""))

    def _change_bucket(self, name: str, acl: str | None, versioning: str | None) -> None:
        with self._lock:
            self._check_open()
            if name not in self.index.buckets:
                raise NotFound(f"no such bucket {name!r}")
            if self._busy(("bucket", name)):
                raise BucketBusy(f"a change of bucket {name!r} is in flight; retry")
            held = self.index.bucket_record(name)
            record = BucketPut(
                name,
                held.created_ms,
                held.owner,
                held.acl if acl is None else acl,
                held.versioning if versioning is None else versioning,
                max(self.clock.now_ms(), held.changed_ms + 1),  # newer than what it replaces
                self.node_id,
            )
            self._commit_bucket(record)
            self.index.put_bucket(record)

    def set_bucket_acl(self, name: str, acl: str) -> None:
        """Keep ``acl`` as the bucket's policy (journaled as a new ``BucketPut``);
        ``NotFound`` if there is no such bucket."""
        self._change_bucket(name, acl, None)

    def bucket_versioning(self, name: str) -> str:
        """The bucket's versioning status: "" (never versioned), ``Enabled`` or
        ``Suspended``; ``NotFound`` if there is no such bucket."""
        check_bucket_name(name)
        with self._lock:
            self._check_open()
            if name not in self.index.buckets:
                raise NotFound(f"no such bucket {name!r}")
            return self.index.versioning.get(name, "")

    def set_bucket_versioning(self, name: str, status: str) -> None:
        """Enable or suspend versioning (``ENABLED``, ``SUSPENDED``); ``InvalidArgument``
        for any other status, ``NotFound`` if there is no such bucket."""
        if status not in (ENABLED, SUSPENDED):
            raise InvalidArgument(f"versioning status must be {ENABLED} or {SUSPENDED}")
        check_bucket_name(name)
        self._change_bucket(name, None, status)

    def delete_bucket(self, name: str) -> None:
        with self._lock:
            self._check_open()
            check_bucket_name(name)
            if name not in self.index.buckets:
                raise NotFound(f"no such bucket {name!r}")
            busy = any(isinstance(e, tuple) and e[1:2] == (name,) for e in self._latest)
            uploads = any(upload.bucket == name for upload in self.index.uploads.values())
            if not self.index.bucket_is_empty(name) or uploads or busy:
                raise BucketNotEmpty(f"bucket {name!r} is not empty")
            self._commit_bucket(BucketDelete(name))
            self.index.remove_bucket(name)

    def list_buckets(self) -> list[BucketInfo]:
        with self._lock:
            self._check_open()
            buckets = self.index.buckets
            return [BucketInfo(name, buckets[name]) for name in sorted(buckets)]
