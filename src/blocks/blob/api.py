"""The blob store contract: buckets of immutable objects, stored as erasure-coded chunks.

Theory of operation. An object is a byte string under a (bucket, key) name. Writing one splits
its bytes into fixed-size chunks; each chunk is named by the SHA-256 of its bytes and stored
once however many objects contain it (deduplication). A chunk is erasure coded into ``k`` data
and ``m`` parity shards, each shard carries its own checksum, and the shards go to distinct
nodes where there are enough of them. The object itself is a *manifest*: the list of chunk ids
plus size, ETag, content type and user metadata (a small object may instead carry its bytes
inline, in the manifest's own record). The manifest is committed last, as one atomic record,
so an object is either wholly visible or not at all: a crash mid-upload leaves only
unreferenced chunks, which garbage collection removes.

Consistency: one store is linearizable for its own callers. ``put_object`` replaces the object
atomically (last writer wins); a reader sees the old object or the new one, never a mix.
Deleting an object drops its chunks' references; chunks that nobody references any longer are
removed (garbage collected).

Durability: a successful ``put_object`` or ``complete_multipart_upload`` has reached the disk
(with ``fsync`` on, the default) before it returns. A read that finds at least ``k`` good
shards per chunk returns exactly the stored bytes and rewrites the bad ones; with fewer it
raises ``Corruption`` (or ``Unavailable`` when nodes are unreachable): never wrong bytes.

Errors: ``InvalidArgument`` for bad names, ranges, part numbers and oversize input (nothing
changes); ``NotFound`` for a missing bucket, key or upload; ``Conflict`` for deleting a bucket
that is not empty and for creating one that exists (``blob.errors`` names which);
``Corruption`` when stored bytes cannot be recovered. Unconditional writes of one key never
conflict: the last one wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from blocks.blob.conditions import WriteCondition

__all__ = [
    "BlobStore",
    "BucketInfo",
    "ListPage",
    "ObjectInfo",
    "PartInfo",
    "ScrubReport",
    "UploadInfo",
]


@dataclass(frozen=True, slots=True)
class BucketInfo:
    """A bucket and when it was created (wall clock, milliseconds since the epoch)."""

    name: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a HEAD returns. ``etag`` is quoted-free hex: MD5 of the bytes for a single PUT,
    ``md5(concatenated part md5s)-N`` for an N-part upload, as S3 does."""

    bucket: str
    key: str
    size: int
    etag: str
    content_type: str
    modified_ms: int
    metadata: Mapping[str, str] = field(default_factory=dict)
    parts_count: int = 0
    checksums: Mapping[str, str] = field(default_factory=dict)
    """Whole-object checksums verified at upload, by algorithm (``crc32``: base64)."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Standard headers stored with the object (lowercase names: ``cache-control``...)."""
    part_sizes: tuple[int, ...] = ()
    """A multipart object's part sizes, in order; empty for a single PUT."""
    version_id: str = ""
    """Its S3 version id in a bucket with versioning enabled or suspended (``null`` for
    the null version); "" in a bucket never versioned."""


@dataclass(frozen=True, slots=True)
class PartInfo:
    """One uploaded part of a multipart upload."""

    number: int
    etag: str
    size: int


@dataclass(frozen=True, slots=True)
class UploadInfo:
    """A multipart upload in progress."""

    bucket: str
    key: str
    upload_id: str
    initiated_ms: int


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of a listing. ``next_token`` is set exactly when ``is_truncated`` is."""

    objects: tuple[ObjectInfo, ...]
    common_prefixes: tuple[str, ...]
    is_truncated: bool
    next_token: str | None


@dataclass(frozen=True, slots=True)
class ScrubReport:
    """What one scrub pass found and did."""

    chunks_checked: int = 0
    shards_repaired: int = 0
    chunks_lost: int = 0
    chunks_collected: int = 0


@runtime_checkable
class BlobStore(Protocol):
    """Buckets of objects. Every method is synchronous and safe to call from many threads."""

    def create_bucket(self, name: str) -> BucketInfo:
        """Create an empty bucket. ``Conflict`` if it exists, ``InvalidArgument`` for a name
        S3 would refuse (3-63 characters of lowercase letters, digits, '.' and '-')."""
        ...

    def delete_bucket(self, name: str) -> None:
        """Delete an empty bucket. ``NotFound`` if absent, ``Conflict`` if it holds objects or
        unfinished multipart uploads."""
        ...

    def list_buckets(self) -> list[BucketInfo]:
        """Every bucket, sorted by name."""
        ...

    def put_object(
        self,
        bucket: str,
        key: str,
        data: bytes | Iterable[bytes],
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
        condition: WriteCondition | None = None,
        checksums: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store ``data`` (bytes, or an iterable of byte pieces read once, streamed) under
        ``key``, replacing any previous object atomically. Returns the new object's info.
        ``condition`` (If-Match / If-None-Match) is checked at the commit point:
        ``ConditionFailed`` or ``NotFound`` if it does not hold, and nothing changes.
        ``checksums`` (verified by the caller) and standard ``headers`` (``STORED_HEADERS``)
        are kept and returned with the object."""
        ...

    def head_object(self, bucket: str, key: str) -> ObjectInfo:
        """The object's info without its bytes. ``NotFound`` if absent."""
        ...

    def get_object(
        self, bucket: str, key: str, byte_range: tuple[int, int] | None = None
    ) -> tuple[ObjectInfo, bytes]:
        """The object's bytes, or the inclusive ``(first, last)`` byte range of them; ``last``
        past the end is clipped to the end. ``InvalidArgument`` for a range that starts past
        the end (S3's 416) or has ``last < first``."""
        ...

    def iter_object(
        self, bucket: str, key: str, byte_range: tuple[int, int] | None = None
    ) -> tuple[ObjectInfo, Iterator[bytes | memoryview]]:
        """Like ``get_object`` but yields the bytes piece by piece as bytes-like objects
        (views of what was read, not copies: join them or write them out; each stays valid
        after the iterator moves on). The manifest is fixed when this returns; the chunks stay
        readable until the iterator is exhausted or closed."""
        ...

    def delete_object(self, bucket: str, key: str) -> bool:
        """Delete the object; True if it existed. Deleting a missing key is not an error
        (S3 semantics). Chunks nobody references any more are garbage collected."""
        ...

    def list_objects(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str = "",
        max_keys: int = 1000,
        start_after: str = "",
        continuation_token: str | None = None,
    ) -> ListPage:
        """Keys in UTF-8 byte order that start with ``prefix``. With a ``delimiter``, keys
        that contain it after the prefix roll up into one common prefix each. A page holds at
        most ``max_keys`` entries (objects plus prefixes, 1..1000); pass ``next_token`` back
        as ``continuation_token`` to resume."""
        ...

    def create_multipart_upload(
        self,
        bucket: str,
        key: str,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Start an upload; returns its id. Nothing is visible until it completes.
        ``metadata`` and standard ``headers`` become the completed object's."""
        ...

    def upload_part(
        self, bucket: str, key: str, upload_id: str, number: int, data: bytes | Iterable[bytes]
    ) -> PartInfo:
        """Store part ``number`` (1..10000), replacing an earlier upload of the same number."""
        ...

    def complete_multipart_upload(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        parts: list[tuple[int, str]],
        *,
        condition: WriteCondition | None = None,
    ) -> ObjectInfo:
        """Join the listed ``(number, etag)`` parts, in ascending order, into the object.
        ``InvalidArgument`` if a part is missing, its ETag differs, the order is wrong, or a
        part other than the last is smaller than the minimum part size. ``condition`` is
        checked as ``put_object`` checks it; when it fails the upload stays open."""
        ...

    def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        """Drop the upload and its parts. ``NotFound`` if there is no such upload."""
        ...

    def list_parts(self, bucket: str, key: str, upload_id: str) -> list[PartInfo]:
        """The upload's parts so far, by number. ``NotFound`` if there is no such upload."""
        ...

    def list_multipart_uploads(self, bucket: str, prefix: str = "") -> list[UploadInfo]:
        """Uploads in progress in ``bucket`` under ``prefix``, by key (one bounded page)."""
        ...

    def scrub(self) -> ScrubReport:
        """Verify every chunk's shards, rewrite the bad ones and collect unreferenced chunks."""
        ...

    def close(self) -> None:
        """Release files; further calls raise ``FailedPrecondition``. Idempotent."""
        ...
