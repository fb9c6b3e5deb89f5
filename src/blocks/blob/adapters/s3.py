"""``S3BlobStore``: the ``blocks.blob`` API on any S3 store, through boto3.

Theory of operation
-------------------
Each ``BlobStore`` call is one S3 request (two where S3 lacks an answer the API promises,
below) on one boto3 client, which is thread-safe, so the store is too. Names, metadata,
headers, checksums, ranges and part lists are checked here first with the blob block's own
rules (``blocks.blob.listing``), so bad input raises ``InvalidArgument`` whatever the store
would have accepted, and nothing is sent. Every botocore exception leaves as the block's
error (``s3_errors.mapped``).

What the store does itself: chunking, redundancy, checksums of parts, the minimum part size
(S3's is 5 MiB), garbage collection and scrubbing. ``checksums`` given to ``put_object`` are
sent as ``x-amz-checksum-*`` for the store to verify, and ``head_object``/``get_object`` ask
for the stored ones (checksum mode enabled).

Where S3 answers less than the API promises, the adapter asks twice (not atomic: a
concurrent writer can slip in between; see docs/adapters.md):

* ``create_bucket`` in ``us-east-1`` raises ``Conflict`` for a bucket that exists: a HEAD
  first, since S3 there answers 200 to creating a bucket its caller owns.
* ``delete_object`` returns whether the object existed: a HEAD before the DELETE.
* ``delete_bucket`` refuses a bucket with uploads in progress (``Conflict``): S3 deletes it
  anyway, so the adapter lists its uploads first.

Bounds: ``put_object`` and ``upload_part`` given an iterable join it in memory, at most
``BODY_BYTES_MAX`` (larger objects: multipart, part by part); ``list_parts`` reads at most
``LIST_PAGES_MAX`` pages and ``list_multipart_uploads`` one (up to 1,000 uploads, as S3 pages
them).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import boto3
from botocore.config import Config

from blocks.blob.api import BucketInfo, ListPage, ObjectInfo, PartInfo, ScrubReport, UploadInfo
from blocks.blob.conditions import WriteCondition
from blocks.blob.errors import BucketExists, BucketNotEmpty
from blocks.blob.listing import (
    MAX_KEYS_MAX,
    check_bucket_name,
    check_checksums,
    check_headers,
    check_key,
    check_metadata,
    resolve_range,
)
from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import Conflict, FailedPrecondition, InvalidArgument, NotFound

from .s3_errors import mapped
from .s3_shapes import (
    BODY_BYTES_MAX,
    DEFAULT_CONTENT_TYPE,
    bare_etag,
    body_bytes,
    check_part_number,
    checksum_arguments,
    checksums_of,
    condition_arguments,
    header_arguments,
    info_of,
    mapped_pieces,
    ms_of,
    parts_count,
)

__all__ = ["BODY_BYTES_MAX", "PROPERTIES", "S3BlobStore"]

PROPERTIES = frozenset({"exact bytes", "ranges", "listing", "multipart", "bad input"})
"""The ``BlobStoreContract`` properties the adapter gives on any S3 store; ``restart`` is the
store's (the contract's restart rule restarts a process the test owns, see the tests)."""

LIST_PAGES_MAX = 100


class S3BlobStore:
    """A ``BlobStore`` on the S3 store at ``endpoint_url`` (``None``: AWS itself).

    ``client`` replaces the boto3 client the store would build (it must be an S3 client);
    ``clock`` gives ``created_ms`` for ``create_bucket`` (S3 does not answer it).
    """

    def __init__(
        self,
        endpoint_url: str | None = None,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = "us-east-1",
        max_attempts: int = 3,
        timeout_s: float = 60.0,
        path_style: bool = True,
        clock: Clock | None = None,
        client: Any = None,
    ) -> None:
        if client is None:
            config = Config(
                s3={"addressing_style": "path" if path_style else "auto"},
                retries={"max_attempts": max_attempts, "mode": "standard"},
                connect_timeout=timeout_s,
                read_timeout=timeout_s,
            )
            with mapped():
                client = boto3.session.Session().client(
                    "s3",
                    endpoint_url=endpoint_url,
                    aws_access_key_id=access_key,
                    aws_secret_access_key=secret_key,
                    region_name=region,
                    config=config,
                )
        self._s3 = client
        self._region = region
        self._clock = clock or SystemClock()
        self._closed = False
        self._lock = threading.Lock()

    # -- buckets ------------------------------------------------------------------------------

    def _call(self, operation: str, **arguments: Any) -> Any:
        if self._closed:
            raise FailedPrecondition("the S3 blob store is closed")
        with mapped():
            return getattr(self._s3, operation)(**arguments)

    def create_bucket(self, name: str) -> BucketInfo:
        check_bucket_name(name)
        arguments: dict[str, Any] = {"Bucket": name}
        if self._region != "us-east-1":
            arguments["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
        elif self._bucket_exists(name):
            # us-east-1 answers 200 to creating a bucket its caller owns (S3's legacy rule).
            raise BucketExists(f"bucket {name!r} already exists")
        self._call("create_bucket", **arguments)
        return BucketInfo(name, self._clock.now_ms())

    def _bucket_exists(self, name: str) -> bool:
        try:
            self._call("head_bucket", Bucket=name)
        except NotFound:
            return False
        return True

    def delete_bucket(self, name: str) -> None:
        check_bucket_name(name)
        if self.list_multipart_uploads(name):
            raise _bucket_busy(name)
        self._call("delete_bucket", Bucket=name)

    def list_buckets(self) -> list[BucketInfo]:
        reply = self._call("list_buckets")
        buckets = [
            BucketInfo(str(b["Name"]), ms_of(b.get("CreationDate"))) for b in reply["Buckets"]
        ]
        return sorted(buckets, key=lambda bucket: bucket.name)

    # -- objects ------------------------------------------------------------------------------

    def put_object(
        self,
        bucket: str,
        key: str,
        data: bytes | Iterable[bytes],
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
        condition: WriteCondition | None = None,
        checksums: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        check_bucket_name(bucket)
        check_key(key)
        clean_metadata = check_metadata(metadata)
        arguments: dict[str, Any] = {
            "Bucket": bucket,
            "Key": key,
            "ContentType": content_type or DEFAULT_CONTENT_TYPE,
            "Metadata": clean_metadata,
            **header_arguments(headers),
            **condition_arguments(condition),
        }
        arguments.update(checksum_arguments(check_checksums(checksums)))
        body = body_bytes(data)
        reply = self._call("put_object", Body=body, **arguments)
        return ObjectInfo(
            bucket,
            key,
            len(body),
            bare_etag(reply.get("ETag")),
            content_type or DEFAULT_CONTENT_TYPE,
            self._clock.now_ms(),
            clean_metadata,
            checksums=checksums_of(reply),
            headers=check_headers(headers),
        )

    def head_object(self, bucket: str, key: str) -> ObjectInfo:
        check_bucket_name(bucket)
        check_key(key)
        reply = self._call("head_object", Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        return info_of(bucket, key, reply, int(reply.get("ContentLength", 0)))

    def get_object(
        self, bucket: str, key: str, byte_range: tuple[int, int] | None = None
    ) -> tuple[ObjectInfo, bytes]:
        if byte_range is not None:
            info, pieces = self.iter_object(bucket, key, byte_range)
            return info, b"".join(pieces)
        # A whole object is read in one call (not piece by piece as ``iter_object`` streams
        # it): the same bytes, without a read and an error mapping per 256 KiB (#20's row).
        check_bucket_name(bucket)
        check_key(key)
        reply = self._call("get_object", Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        body = reply["Body"]
        try:
            with mapped():
                data: bytes = body.read()
        finally:
            body.close()
        return info_of(bucket, key, reply, int(reply.get("ContentLength", 0))), data

    def iter_object(
        self, bucket: str, key: str, byte_range: tuple[int, int] | None = None
    ) -> tuple[ObjectInfo, Iterator[bytes | memoryview]]:
        check_bucket_name(bucket)
        check_key(key)
        arguments: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if byte_range is not None:
            first, last = byte_range
            if first < 0:
                if last != -1 or first == 0:
                    raise InvalidArgument("a suffix range is (-N, -1)")
                arguments["Range"] = f"bytes={first}"
            elif last < first:
                raise InvalidArgument(f"range {first}-{last}: last before first")
            else:
                arguments["Range"] = f"bytes={first}-{last}"
        else:
            arguments["ChecksumMode"] = "ENABLED"  # stored checksums cover whole objects only
        reply = self._call("get_object", **arguments)
        total = int(reply.get("ContentLength", 0))
        content_range = str(reply.get("ContentRange") or "")
        if content_range:
            total = int(content_range.rpartition("/")[2])
        info = info_of(bucket, key, reply, total)
        pieces = mapped_pieces(reply["Body"])
        if byte_range is not None and not content_range:
            # The store ignored the range (HTTP allows it): apply it here, as the API says.
            whole = b"".join(pieces)
            start, stop = resolve_range(byte_range, len(whole))
            return info, iter((whole[start:stop],))
        return info, pieces

    def delete_object(self, bucket: str, key: str) -> bool:
        check_bucket_name(bucket)
        check_key(key)
        try:
            self.head_object(bucket, key)
            existed = True
        except NotFound:  # no such key (or no such bucket: the DELETE says which)
            existed = False
        self._call("delete_object", Bucket=bucket, Key=key)
        return existed

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
        check_bucket_name(bucket)
        if not 1 <= max_keys <= MAX_KEYS_MAX:
            raise InvalidArgument(f"max_keys must be in 1..{MAX_KEYS_MAX}")
        arguments: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": max_keys}
        if delimiter:
            arguments["Delimiter"] = delimiter
        if start_after:
            arguments["StartAfter"] = start_after
        if continuation_token is not None:
            arguments["ContinuationToken"] = continuation_token
        reply = self._call("list_objects_v2", **arguments)
        objects = tuple(
            ObjectInfo(
                bucket,
                str(item["Key"]),
                int(item.get("Size", 0)),
                bare_etag(item.get("ETag")),
                "",  # a listing does not carry the content type
                ms_of(item.get("LastModified")),
                parts_count=parts_count(bare_etag(item.get("ETag"))),
            )
            for item in reply.get("Contents", ())
        )
        prefixes = tuple(str(p["Prefix"]) for p in reply.get("CommonPrefixes", ()))
        truncated = bool(reply.get("IsTruncated", False))
        token = reply.get("NextContinuationToken") if truncated else None
        return ListPage(objects, prefixes, truncated, str(token) if token else None)

    # -- multipart uploads --------------------------------------------------------------------

    def create_multipart_upload(
        self,
        bucket: str,
        key: str,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        check_bucket_name(bucket)
        check_key(key)
        reply = self._call(
            "create_multipart_upload",
            Bucket=bucket,
            Key=key,
            ContentType=content_type or DEFAULT_CONTENT_TYPE,
            Metadata=check_metadata(metadata),
            **header_arguments(headers),
        )
        return str(reply["UploadId"])

    def upload_part(
        self, bucket: str, key: str, upload_id: str, number: int, data: bytes | Iterable[bytes]
    ) -> PartInfo:
        check_bucket_name(bucket)
        check_key(key)
        check_part_number(number)
        body = body_bytes(data)
        reply = self._call(
            "upload_part", Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
        )
        return PartInfo(number, bare_etag(reply.get("ETag")), len(body))

    def complete_multipart_upload(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        parts: list[tuple[int, str]],
        *,
        condition: WriteCondition | None = None,
    ) -> ObjectInfo:
        check_bucket_name(bucket)
        check_key(key)
        if not parts:
            raise InvalidArgument("a multipart upload completes with at least one part")
        numbers = [number for number, _ in parts]
        for number in numbers:
            check_part_number(number)
        if numbers != sorted(set(numbers)):
            raise InvalidArgument("parts must be listed once each, in ascending order")
        self._call(
            "complete_multipart_upload",
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={
                "Parts": [{"PartNumber": n, "ETag": f'"{bare_etag(tag)}"'} for n, tag in parts]
            },
            **condition_arguments(condition),
        )
        return self.head_object(bucket, key)

    def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        check_bucket_name(bucket)
        check_key(key)
        self._call("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)

    def list_parts(self, bucket: str, key: str, upload_id: str) -> list[PartInfo]:
        check_bucket_name(bucket)
        check_key(key)
        parts: list[PartInfo] = []
        arguments: dict[str, Any] = {"Bucket": bucket, "Key": key, "UploadId": upload_id}
        for _ in range(LIST_PAGES_MAX):
            reply = self._call("list_parts", **arguments)
            parts += [
                PartInfo(int(p["PartNumber"]), bare_etag(p.get("ETag")), int(p.get("Size", 0)))
                for p in reply.get("Parts", ())
            ]
            if not reply.get("IsTruncated"):
                break
            arguments["PartNumberMarker"] = reply["NextPartNumberMarker"]
        return parts

    def list_multipart_uploads(self, bucket: str, prefix: str = "") -> list[UploadInfo]:
        check_bucket_name(bucket)
        reply = self._call("list_multipart_uploads", Bucket=bucket, Prefix=prefix)
        return [
            UploadInfo(bucket, str(u["Key"]), str(u["UploadId"]), ms_of(u.get("Initiated")))
            for u in reply.get("Uploads", ())
        ]

    # -- the rest -----------------------------------------------------------------------------

    def scrub(self) -> ScrubReport:
        """An empty report: an S3 store checks and repairs its own copies; the adapter
        checks nothing (it has no access to them)."""
        if self._closed:
            raise FailedPrecondition("the S3 blob store is closed")
        return ScrubReport()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        close = getattr(self._s3, "close", None)
        if callable(close):
            close()


def _bucket_busy(name: str) -> Conflict:
    return BucketNotEmpty(f"bucket {name!r} has multipart uploads in progress")
