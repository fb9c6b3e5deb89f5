"""Multipart uploads: parts stored as chunks now, joined into one manifest at completion.

Theory of operation. An upload is a journal record (bucket, key, content type, metadata)
under a random id. Each part is chunked and stored like a large object (parts are never
inline), and its part record (number, MD5, chunk list) is committed like any change
(``committing``): submitted under the lock, awaited outside it, so concurrent UploadParts
share fsyncs; uploading a number again replaces the record and releases the old part's
chunks. Completion checks the client's list (ascending numbers, matching ETags, every part
but the last at least ``part_bytes_min``), concatenates the parts' chunk lists into one
manifest and commits it with the removal of the upload as *one* record, so the object
appears and the upload disappears together. The parts' chunk references move to the
manifest; parts not named are released. Nothing of an upload is visible as an object before
completion, and an abort releases every part.

While a completion or an abort is in flight the upload is *closing*: new parts, a second
completion and an abort of it are refused as if it were gone.

The S3 ETag of the result is ``md5(md5(part 1) || ... || md5(part N))-N``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from blocks.blob.api import ObjectInfo, PartInfo, UploadInfo
from blocks.blob.checksums import ALGORITHMS, multipart_checksums
from blocks.blob.conditions import WriteCondition, check_write
from blocks.blob.listing import check_checksums, check_headers, check_key, check_metadata
from blocks.blob.storage.meta import ChunkRef, Manifest, PartRecord, UploadRecord
from blocks.blob.storage.records import (
    PartPut,
    UploadAbort,
    UploadComplete,
    UploadPut,
)
from blocks.blob.storage.store_parts import StoreParts
from blocks.core.errors import InvalidArgument, NotFound

__all__ = ["PARTS_MAX", "MultipartMixin"]

PARTS_MAX = 10_000
PART_BYTES_MAX = 5 * 1024**3
UPLOADS_MAX = 10_000
UPLOADS_LISTED_MAX = 1000


class MultipartMixin(StoreParts):
    """The multipart half of ``LocalBlobStore`` (what it uses of the other halves: ``StoreParts``)."""

    part_bytes_min: int
    object_bytes_max: int
    _closing: set[str]

    def _store_stream(
        self, data: bytes | Iterable[bytes], size_max: int
    ) -> tuple[list[ChunkRef], int, bytes]:
        raise NotImplementedError

    def _init_multipart(self) -> None:
        self._closing = set()

    def _bucket_has_uploads(self, bucket: str) -> bool:
        return any(upload.bucket == bucket for upload in self.index.uploads.values())

    def _upload(self, bucket: str, key: str, upload_id: str) -> UploadRecord:
        upload = self.index.uploads.get(upload_id) if isinstance(upload_id, str) else None
        closing = upload_id in self._closing if isinstance(upload_id, str) else False
        if upload is None or upload.bucket != bucket or upload.key != key or closing:
            raise NotFound(f"no such upload {upload_id!r}")
        return upload

    def _close_upload(self, upload_id: str) -> list[PartRecord]:
        """Forget a closing upload (lock held); returns its parts for the caller to release."""
        self._closing.discard(upload_id)
        return self.index.drop_upload(upload_id)

    def create_multipart_upload(
        self,
        bucket: str,
        key: str,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        checksum_algorithm: str = "",
    ) -> str:
        """``checksum_algorithm`` (one of ``checksums.ALGORITHMS``, "" for none): every
        part must carry that checksum and the object keeps their composite."""
        check_key(key)
        if checksum_algorithm and checksum_algorithm not in ALGORITHMS:
            raise InvalidArgument(f"unknown checksum algorithm {checksum_algorithm!r}")
        user_metadata = check_metadata(metadata)
        stored_headers = check_headers(headers)
        with self._lock:
            self._check_open()
            self._bucket_index(bucket)
            if len(self.index.uploads) >= UPLOADS_MAX:
                raise InvalidArgument(f"too many open uploads (max {UPLOADS_MAX})")
            upload = UploadRecord(
                upload_id=f"{self.rng.getrandbits(128):032x}",
                bucket=bucket,
                key=key,
                content_type=content_type or "application/octet-stream",
                created_ms=self.clock.now_ms(),
                metadata=user_metadata,
                headers=stored_headers,
                checksum_algorithm=checksum_algorithm,
            )
            entity = ("upload", bucket, upload.upload_id)
            sequence, future, _ = self._submit(entity, UploadPut(upload))
            # Visible at once: nobody knows the id before we return it, and every record
            # about the upload comes after this one in the journal.
            self.index.add_upload(upload)
        try:
            future.result()
        finally:
            with self._lock:
                self._finish(entity, sequence)
        return upload.upload_id

    def upload_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        number: int,
        data: bytes | Iterable[bytes],
        checksums: Mapping[str, str] | None = None,
    ) -> PartInfo:
        """``checksums`` (verified by the caller) are kept with the part; the upload's
        checksum algorithm, if it named one, must be among them."""
        if not isinstance(number, int) or not 1 <= number <= PARTS_MAX:
            raise InvalidArgument(f"part number must be in [1, {PARTS_MAX}]")
        kept = check_checksums(checksums)
        with self._lock:
            self._check_open()
            algorithm = self._upload(bucket, key, upload_id).checksum_algorithm
        if algorithm and algorithm not in kept:
            raise InvalidArgument(f"this upload needs each part's {algorithm} (InvalidRequest)")
        refs, size, digest = self._store_stream(data, PART_BYTES_MAX)
        part = PartRecord(upload_id, number, digest.hex(), size, digest, tuple(refs), kept)
        entity = ("part", bucket, upload_id, number)
        try:
            self.ledger.make_durable(refs)
            with self._lock:
                self._check_open()
                self._upload(bucket, key, upload_id)
                sequence, future, _ = self._submit(entity, PartPut(part))
        except BaseException:
            self.ledger.release(refs)
            raise
        self._durable(entity, sequence, future)  # failed: the pins stay (``committing``)
        with self._lock:
            current = self._finish(entity, sequence)
            installed = current and upload_id in self.index.uploads
            old = self.index.put_part(part) if installed else None
            self._maybe_compact()
        if not installed:  # overtaken, or the upload completed or aborted meanwhile
            self.ledger.release(refs)
        if old is not None:
            self.ledger.release(old.chunks)
        return PartInfo(number, part.etag, size)

    def list_parts(self, bucket: str, key: str, upload_id: str) -> list[PartInfo]:
        """The parts uploaded so far, by number."""
        with self._lock:
            self._check_open()
            self._upload(bucket, key, upload_id)
            parts = self.index.parts[upload_id]
            return [PartInfo(n, parts[n].etag, parts[n].size) for n in sorted(parts)]

    def list_multipart_uploads(self, bucket: str, prefix: str = "") -> list[UploadInfo]:
        """Uploads in progress in ``bucket`` whose key starts with ``prefix``, by key then
        age (at most ``UPLOADS_LISTED_MAX``: a listing is one bounded page)."""
        with self._lock:
            self._check_open()
            self._bucket_index(bucket)
            found = [
                UploadInfo(u.bucket, u.key, u.upload_id, u.created_ms)
                for u in self.index.uploads.values()
                if u.bucket == bucket
                and u.key.startswith(prefix)
                and u.upload_id not in self._closing
            ]
        found.sort(key=lambda u: (u.key, u.initiated_ms, u.upload_id))
        return found[:UPLOADS_LISTED_MAX]

    def _chosen_parts(self, upload_id: str, parts: list[tuple[int, str]]) -> list[PartRecord]:
        if not parts:
            raise InvalidArgument("a multipart upload must name at least one part")
        stored = self.index.parts[upload_id]
        chosen: list[PartRecord] = []
        for position, (number, etag) in enumerate(parts):
            if position and number <= parts[position - 1][0]:
                raise InvalidArgument("parts must be listed in ascending order (InvalidPartOrder)")
            part = stored.get(number)
            if part is None or part.etag != str(etag).strip('"').lower():
                raise InvalidArgument(f"part {number} was not uploaded or its ETag differs")
            if position < len(parts) - 1 and part.size < self.part_bytes_min:
                raise InvalidArgument(
                    f"part {number} is smaller than {self.part_bytes_min} bytes (EntityTooSmall)"
                )
            chosen.append(part)
        return chosen

    def complete_multipart_upload(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        parts: list[tuple[int, str]],
        *,
        condition: WriteCondition | None = None,
        part_checksums: Mapping[int, Mapping[str, str]] | None = None,
        checksums: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """``part_checksums`` (named in the request, by part) must match those kept;
        ``checksums`` (the request's whole-object values) must match the composite the
        object keeps (``checksums.multipart_checksums``; ``ChecksumMismatch`` if not)."""
        with self._lock:
            self._check_open()
            upload = self._upload(bucket, key, upload_id)
            current = self._bucket_index(bucket).get(key)
            check_write(condition, current.etag if current is not None else None)  # early
            chosen = self._chosen_parts(upload_id, parts)
            kept = multipart_checksums(
                upload.checksum_algorithm,
                [(part.number, part.checksums) for part in chosen],
                part_checksums or {},
                checksums or {},
            )
            size = sum(part.size for part in chosen)
            if size > self.object_bytes_max:
                raise InvalidArgument(f"object larger than {self.object_bytes_max} bytes")
            joined = hashlib.md5(b"".join(p.md5 for p in chosen), usedforsecurity=False)
            modified_ms, version_id = self._stamp(bucket, key)
            manifest = Manifest(
                bucket=bucket,
                key=key,
                size=size,
                etag=f"{joined.hexdigest()}-{len(chosen)}",
                content_type=upload.content_type,
                modified_ms=modified_ms,
                chunks=tuple(ref for part in chosen for ref in part.chunks),
                metadata=dict(upload.metadata),
                parts_count=len(chosen),
                part_sizes=tuple(part.size for part in chosen),
                headers=dict(upload.headers),
                writer=self.node_id,
                checksums=kept,
                version_id=version_id,
            )
            self.ledger.pin(manifest.chunks)  # the manifest's own references
            self._closing.add(upload_id)
        try:
            installed = self._commit_object(
                UploadComplete(upload_id, manifest), list(manifest.chunks), upload_id, condition
            )
        except BaseException:
            with self._lock:
                self._closing.discard(upload_id)
            raise
        return self._info(installed)  # as journaled: a replica may have restamped it

    def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        entity = ("upload", bucket, upload_id)
        with self._lock:
            self._check_open()
            self._upload(bucket, key, upload_id)
            sequence, future, _ = self._submit(entity, UploadAbort(upload_id))
            self._closing.add(upload_id)
        try:
            future.result()
        except BaseException:
            with self._lock:
                self._finish(entity, sequence)
                self._closing.discard(upload_id)
            raise
        with self._lock:
            self._finish(entity, sequence)
            parts = self._close_upload(upload_id)
            self._maybe_compact()
        for part in parts:
            self.ledger.release(part.chunks)
