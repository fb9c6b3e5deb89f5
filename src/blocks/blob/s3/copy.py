"""CopyObject and UploadPartCopy: an object's bytes, or a range of them, stored again.

Theory of operation. The copy reads the source through the store (pinned, verified) and
hands its pieces to ``put_object`` or ``upload_part`` in the same worker thread; the chunk
layer deduplicates them, so a copy costs reading and hashing the bytes but writes no shard
that exists already. The source's ``x-amz-copy-source-if-*`` conditions are evaluated on the
object actually read; failing any gives 412 (S3 answers a copy 412, never 304).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar, cast
from urllib.parse import parse_qsl, unquote

from blocks.blob.api import BlobStore, ObjectInfo, PartInfo
from blocks.blob.conditions import WriteCondition, read_outcome
from blocks.blob.s3.awschunked import S3RequestError
from blocks.blob.s3.docs import copy_result
from blocks.blob.s3.headers import parse_range, stored_headers, user_metadata, xml_response
from blocks.blob.s3.http import RequestHead, Response
from blocks.blob.s3.ops import not_implemented
from blocks.blob.s3.workers import Workers
from blocks.blob.store import LocalBlobStore

__all__ = ["CopyOps"]

T = TypeVar("T")


class CopyOps:
    """CopyObject and UploadPartCopy for ``S3Handler`` (see the module docstring)."""

    store: BlobStore
    workers: Workers

    async def _copy_part(
        self, head: RequestHead, bucket: str, key: str, query: dict[str, str]
    ) -> Response:
        """UploadPartCopy: a byte range of an object (``x-amz-copy-source-range``, or all
        of it) becomes a part, its chunks deduplicated as in CopyObject."""
        source = copy_source(head)
        number_text = query["partNumber"]
        if not number_text.isdigit():
            raise S3RequestError("InvalidArgument", "partNumber must be an integer")
        range_text = head.headers.get("x-amz-copy-source-range")
        byte_range = parse_range(range_text) if range_text else None
        if range_text and (byte_range is None or byte_range[0] < 0):
            raise S3RequestError("InvalidArgument", "x-amz-copy-source-range is bytes=first-last")
        conditions = copy_conditions(head)

        def store_part(_: ObjectInfo, pieces: Iterable[bytes]) -> PartInfo:
            return self.store.upload_part(bucket, key, query["uploadId"], int(number_text), pieces)

        info, part = await self.workers.run(
            self._copy_source, source, byte_range, conditions, store_part
        )
        document = copy_result(dataclasses.replace(info, etag=part.etag), "CopyPartResult")
        return _with_versions(xml_response(document), info, None)

    async def _copy(self, head: RequestHead, bucket: str, key: str) -> Response:
        """CopyObject: the source's bytes become a new object (its chunks deduplicated, so
        nothing is written twice), with the source's metadata or, with
        ``x-amz-metadata-directive: REPLACE``, the request's."""
        source = copy_source(head)
        source_bucket, source_key, source_version = source
        directive = head.headers.get("x-amz-metadata-directive", "COPY").upper()
        if directive not in ("COPY", "REPLACE"):
            raise S3RequestError("InvalidArgument", "x-amz-metadata-directive is COPY or REPLACE")
        onto_itself = (source_bucket, source_key) == (bucket, key) and source_version is None
        if onto_itself and directive == "COPY":
            raise S3RequestError(
                "InvalidRequest", "copying an object onto itself must change its metadata"
            )
        source_conditions = copy_conditions(head)
        condition = WriteCondition.from_headers(head.headers)

        def store_object(info: ObjectInfo, pieces: Iterable[bytes]) -> ObjectInfo:
            replace = directive == "REPLACE"
            return self.store.put_object(
                bucket,
                key,
                pieces,
                content_type=head.headers.get("content-type", info.content_type)
                if replace
                else info.content_type,
                metadata=user_metadata(head.headers) if replace else info.metadata,
                condition=condition,
                # The same bytes; a multipart composite ("...-N") names parts a copy lacks.
                checksums={k: v for k, v in info.checksums.items() if "-" not in v},
                headers=stored_headers(head.headers) if replace else info.headers,
            )

        read, copied = await self.workers.run(
            self._copy_source, source, None, source_conditions, store_object
        )
        return _with_versions(xml_response(copy_result(copied)), read, copied)

    def _copy_source(
        self,
        source: tuple[str, str, str | None],
        byte_range: tuple[int, int] | None,
        conditions: dict[str, str],
        store: Callable[[ObjectInfo, Iterable[bytes]], T],
    ) -> tuple[ObjectInfo, T]:
        """Read ``source`` (bucket, key, version id: ``copy_source``), check the copy's
        source ``conditions`` on the object actually read (412 if one fails), and give its
        pieces to ``store`` (views of shards: the pipeline takes them as they are). Blocks
        (a worker thread's call); the pieces are closed however it ends."""
        bucket, key, version_id = source
        info, pieces = self._read_source(bucket, key, byte_range, version_id)
        try:
            if read_outcome(conditions, info.etag, info.modified_ms) is not None:
                raise S3RequestError(
                    "PreconditionFailed", "a copy-source precondition does not hold", 412
                )
            return info, store(info, cast(Iterable[bytes], pieces))
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()

    def _read_source(
        self,
        bucket: str,
        key: str,
        byte_range: tuple[int, int] | None,
        version_id: str | None,
    ) -> tuple[ObjectInfo, Iterator[bytes | memoryview]]:
        """The copy's source: the current object, or the version the header names."""
        if version_id is None:
            return self.store.iter_object(bucket, key, byte_range)
        if not isinstance(self.store, LocalBlobStore):
            if version_id != "null":
                raise not_implemented({"versionId"})
            return self.store.iter_object(bucket, key, byte_range)
        return self.store.iter_object(bucket, key, byte_range, version_id)


def _with_versions(response: Response, source: ObjectInfo, copied: ObjectInfo | None) -> Response:
    """A copy's reply names the source's version and the new object's, where they have ids."""
    if source.version_id:
        response.headers["x-amz-copy-source-version-id"] = source.version_id
    if copied is not None and copied.version_id:
        response.headers["x-amz-version-id"] = copied.version_id
    return response


def copy_source(head: RequestHead) -> tuple[str, str, str | None]:
    """The (bucket, key, version id or None for the current one) of ``x-amz-copy-source``.

    The header is ``bucket/key`` URL-encoded, then an optional ``?versionId=``: split off the
    query before decoding, since a key may contain ``?`` (sent as ``%3F``)."""
    source_text, _, source_query = head.headers["x-amz-copy-source"].partition("?")
    source_path = unquote(source_text)
    source_bucket, _, source_key = source_path.lstrip("/").partition("/")
    if not source_bucket or not source_key:
        raise S3RequestError("InvalidArgument", "x-amz-copy-source must be /bucket/key")
    return source_bucket, source_key, dict(parse_qsl(source_query)).get("versionId")


def copy_conditions(head: RequestHead) -> dict[str, str]:
    """``x-amz-copy-source-if-*`` as the plain conditions ``read_outcome`` takes."""
    return {
        name.removeprefix("x-amz-copy-source-"): value
        for name, value in head.headers.items()
        if name.startswith("x-amz-copy-source-if-")
    }
