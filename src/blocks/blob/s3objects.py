"""S3 object operations: GET/HEAD (ranges, conditionals, overrides, attributes), PUT,
the multipart POSTs, DELETE, ListParts; the ``S3Handler``'s object half.

Theory of operation. ``S3Handler`` authenticates, bounds and decodes a request, then routes
object paths here. Every method first decides the operation from the query's subresources
(``s3ops``): anything not served is 501 before the store is touched. Store calls run on the
handler's pools (``workers``); streamed bodies on the uploads pool. Conditional reads are
evaluated on the object actually opened (``conditions.read_outcome``), conditional writes
before the body is read and again at the commit point (``conditions.check_write``).
"""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import cast
from urllib.parse import parse_qsl, unquote

from blocks.blob.api import BlobStore, ObjectInfo
from blocks.blob.awschunked import S3RequestError
from blocks.blob.conditions import WriteCondition, check_write, read_outcome
from blocks.blob.http import RequestHead, Response
from blocks.blob.listing import STORED_HEADERS, resolve_range
from blocks.blob.s3docs import copy_result
from blocks.blob.s3ops import not_implemented, response_overrides, subresources
from blocks.blob.s3xml import (
    attributes_result,
    complete_result,
    http_date,
    initiate_result,
    list_parts_result,
    parse_complete_request,
)
from blocks.blob.streaming import ObjectBody, StreamedPayload
from blocks.blob.workers import Workers
from blocks.core.errors import InvalidArgument, NotFound

__all__ = [
    "INLINE_BODY_BYTES_MAX",
    "NotModified",
    "ObjectOps",
    "object_headers",
    "parse_range",
    "xml_response",
]

INLINE_BODY_BYTES_MAX = 256 * 1024
"""GET bodies up to this size that arrive in one piece are sent from the event loop as one
buffer; larger ones stream, each next piece read in a worker thread while one is sent."""
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(value: str | None) -> tuple[int, int] | None:
    """An inclusive byte range from a ``Range`` header, ``(-n, -1)`` for a suffix, or
    ``None`` to serve the whole object (absent, multi-range or unparsable, as S3 does)."""
    if not value:
        return None
    match = _RANGE.match(value.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        return (-int(last), -1) if int(last) > 0 else None
    return int(first), int(last) if last else 2**63


class ObjectOps:
    """The object operations of ``S3Handler`` (see the module docstring)."""

    store: BlobStore
    workers: Workers

    async def _check_write_early(self, head: RequestHead) -> None:
        """A conditional PutObject whose condition fails is refused before its body is
        read (the store checks again at the commit point)."""
        if head.method != "PUT" or not (
            "if-match" in head.headers or "if-none-match" in head.headers
        ):
            return
        bucket, _, key = head.path.lstrip("/").partition("/")
        query = dict(parse_qsl(head.raw_query, keep_blank_values=True))
        if not key or subresources(query):
            return
        condition = WriteCondition.from_headers(head.headers)

        def current_etag() -> str | None:
            try:
                return self.store.head_object(bucket, key).etag
            except NotFound as error:
                if str(error).startswith("no such bucket"):
                    raise
                return None

        check_write(condition, await self.workers.run(current_etag))

    async def _delete(self, bucket: str, key: str, query: dict[str, str]) -> Response:
        names = subresources(query)
        if names == {"uploadId"}:
            await self.workers.run(
                self.store.abort_multipart_upload, bucket, key, query["uploadId"]
            )
        elif not names or (names == {"versionId"} and query["versionId"] == "null"):
            await self.workers.run(self.store.delete_object, bucket, key)  # the only version
        else:
            raise not_implemented(names)
        return Response(204)

    async def _read_object(
        self, head: RequestHead, bucket: str, key: str, query: dict[str, str]
    ) -> Response:
        names = subresources(query)
        if head.method == "GET" and "uploadId" in names:
            if names - {"uploadId", "max-parts", "part-number-marker"}:
                raise not_implemented(names)
            return await self._list_parts(bucket, key, query)
        if head.method == "GET" and names == {"attributes"}:
            info = await self.workers.run(self.store.head_object, bucket, key)
            wanted = head.headers.get("x-amz-object-attributes", "").lower()
            document = attributes_result(info, {w.strip() for w in wanted.split(",")})
            response = xml_response(document)
            response.headers["Last-Modified"] = http_date(info.modified_ms)
            return response
        if names and not (names == {"versionId"} and query["versionId"] == "null"):
            raise not_implemented(names)
        response = await self._get(head, bucket, key)
        if head.method == "GET" and response.status < 300:
            response.headers.update(response_overrides(query))
        return response

    async def _list_parts(self, bucket: str, key: str, query: dict[str, str]) -> Response:
        max_text = query.get("max-parts", "1000")
        marker_text = query.get("part-number-marker", "0") or "0"
        if not max_text.isdigit() or not marker_text.isdigit():
            raise S3RequestError("InvalidArgument", "max-parts and part-number-marker are integers")
        upload_id = query["uploadId"]
        parts = await self.workers.run(self.store.list_parts, bucket, key, upload_id)
        max_parts = min(int(max_text), 1000)
        return xml_response(
            list_parts_result(bucket, key, upload_id, parts, max_parts, int(marker_text))
        )

    async def _get(self, head: RequestHead, bucket: str, key: str) -> Response:
        if head.method == "HEAD":
            info = await self.workers.run(self.store.head_object, bucket, key)
            _check_read(head, info)
            headers = object_headers(info)
            headers.update(_checksum_headers(head, info))
            return Response(200, headers, content_length=info.size)
        byte_range = parse_range(head.headers.get("range"))
        try:
            info, body = await self.workers.run(self._open_body, bucket, key, byte_range)
        except InvalidArgument as error:
            if byte_range is None:
                raise
            size = (await self.workers.run(self.store.head_object, bucket, key)).size
            raise S3RequestError("InvalidRange", f"{error} (size {size})", 416) from error
        try:
            _check_read(head, info)
        except BaseException:
            body.close()
            raise
        headers = object_headers(info)
        start, stop = resolve_range(byte_range, info.size)
        status = 200 if byte_range is None else 206
        if byte_range is not None:
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{info.size}"
        else:
            headers.update(_checksum_headers(head, info))
        whole = body.whole(stop - start, INLINE_BODY_BYTES_MAX)
        if whole is not None:  # small: sent from the event loop, no more thread hand-offs
            return Response(status, headers, whole, content_length=stop - start)
        return Response(status, headers, content_length=stop - start, pieces=body)

    def _open_body(
        self, bucket: str, key: str, byte_range: tuple[int, int] | None
    ) -> tuple[ObjectInfo, ObjectBody]:
        """The object and its body with the first piece read: one worker-thread trip."""
        info, pieces = self.store.iter_object(bucket, key, byte_range)
        body = ObjectBody(pieces)
        try:
            body.prefetch()
        except BaseException:
            body.close()
            raise
        return info, body

    async def _put(
        self,
        head: RequestHead,
        bucket: str,
        key: str,
        query: dict[str, str],
        payload: bytes | StreamedPayload,
        checksums: dict[str, str],
    ) -> Response:
        if "x-amz-copy-source" in head.headers:
            names = subresources(query)
            if names == {"partNumber", "uploadId"}:
                return await self._copy_part(head, bucket, key, query)
            if names:
                raise not_implemented(names)
            return await self._copy(head, bucket, key)
        if "partNumber" in query or "uploadId" in query:
            number_text = query.get("partNumber", "")
            if not number_text.isdigit() or "uploadId" not in query:
                raise S3RequestError("InvalidArgument", "UploadPart needs partNumber and uploadId")
            run = (
                self.workers.run_upload
                if isinstance(payload, StreamedPayload)
                else self.workers.run
            )
            part = await run(
                self.store.upload_part, bucket, key, query["uploadId"], int(number_text), payload
            )
            return Response(200, {"ETag": f'"{part.etag}"'})
        if subresources(query):
            raise not_implemented(subresources(query))
        condition = WriteCondition.from_headers(head.headers)
        run = self.workers.run_upload if isinstance(payload, StreamedPayload) else self.workers.run
        info = await run(
            lambda: self.store.put_object(
                bucket,
                key,
                payload,
                content_type=head.headers.get("content-type", "application/octet-stream"),
                metadata=_user_metadata(head.headers),
                condition=condition,
                checksums=checksums,
                headers=_stored_headers(head.headers),
            )
        )
        return Response(200, {"ETag": f'"{info.etag}"'})

    async def _copy_part(
        self, head: RequestHead, bucket: str, key: str, query: dict[str, str]
    ) -> Response:
        """UploadPartCopy: a byte range of an object (``x-amz-copy-source-range``, or all
        of it) becomes a part, its chunks deduplicated as in CopyObject."""
        source_bucket, source_key = _copy_source(head)
        number_text = query["partNumber"]
        if not number_text.isdigit():
            raise S3RequestError("InvalidArgument", "partNumber must be an integer")
        range_text = head.headers.get("x-amz-copy-source-range")
        byte_range = parse_range(range_text) if range_text else None
        if range_text and (byte_range is None or byte_range[0] < 0):
            raise S3RequestError("InvalidArgument", "x-amz-copy-source-range is bytes=first-last")
        conditions = _copy_conditions(head)

        def copy() -> tuple[ObjectInfo, str]:
            info, pieces = self.store.iter_object(source_bucket, source_key, byte_range)
            try:
                if read_outcome(conditions, info.etag, info.modified_ms) is not None:
                    raise S3RequestError(
                        "PreconditionFailed", "a copy-source precondition does not hold", 412
                    )
                part = self.store.upload_part(
                    bucket, key, query["uploadId"], int(number_text), cast(Iterable[bytes], pieces)
                )
                return info, part.etag
            finally:
                close = getattr(pieces, "close", None)
                if close is not None:
                    close()

        info, etag = await self.workers.run(copy)
        return xml_response(copy_result(dataclasses.replace(info, etag=etag), "CopyPartResult"))

    async def _copy(self, head: RequestHead, bucket: str, key: str) -> Response:
        """CopyObject: the source's bytes become a new object (its chunks deduplicated, so
        nothing is written twice), with the source's metadata or, with
        ``x-amz-metadata-directive: REPLACE``, the request's."""
        source_bucket, source_key = _copy_source(head)
        directive = head.headers.get("x-amz-metadata-directive", "COPY").upper()
        if directive not in ("COPY", "REPLACE"):
            raise S3RequestError("InvalidArgument", "x-amz-metadata-directive is COPY or REPLACE")
        if (source_bucket, source_key) == (bucket, key) and directive == "COPY":
            raise S3RequestError(
                "InvalidRequest", "copying an object onto itself must change its metadata"
            )
        source_conditions = _copy_conditions(head)
        condition = WriteCondition.from_headers(head.headers)

        def copy() -> ObjectInfo:
            info, pieces = self.store.iter_object(source_bucket, source_key)
            try:
                if read_outcome(source_conditions, info.etag, info.modified_ms) is not None:
                    raise S3RequestError(
                        "PreconditionFailed", "a copy-source precondition does not hold", 412
                    )
                replace = directive == "REPLACE"
                return self.store.put_object(
                    bucket,
                    key,
                    cast(Iterable[bytes], pieces),  # views of shards: the pipeline takes them
                    content_type=head.headers.get("content-type", info.content_type)
                    if replace
                    else info.content_type,
                    metadata=_user_metadata(head.headers) if replace else info.metadata,
                    condition=condition,
                    checksums=info.checksums,  # the same bytes
                    headers=_stored_headers(head.headers) if replace else info.headers,
                )
            finally:
                close = getattr(pieces, "close", None)
                if close is not None:
                    close()

        return xml_response(copy_result(await self.workers.run(copy)))

    async def _post(
        self, head: RequestHead, bucket: str, key: str, query: dict[str, str], payload: bytes
    ) -> Response:
        if "uploads" in query:
            upload_id = await self.workers.run(
                lambda: self.store.create_multipart_upload(
                    bucket,
                    key,
                    content_type=head.headers.get("content-type", "application/octet-stream"),
                    metadata=_user_metadata(head.headers),
                )
            )
            return xml_response(initiate_result(bucket, key, upload_id))
        if "uploadId" in query:
            parts = parse_complete_request(payload)
            info = await self.workers.run(
                self.store.complete_multipart_upload, bucket, key, query["uploadId"], parts
            )
            return xml_response(complete_result(f"/{bucket}/{key}", bucket, key, info.etag))
        raise S3RequestError("NotImplemented", "this POST operation is not implemented", 501)


class NotModified(Exception):
    """A conditional read whose object has not changed: answered 304."""


def _check_read(head: RequestHead, info: ObjectInfo) -> None:
    outcome = read_outcome(head.headers, info.etag, info.modified_ms)
    if outcome == 412:
        raise S3RequestError("PreconditionFailed", "a read precondition does not hold", 412)
    if outcome == 304:
        raise NotModified(info)


def _copy_source(head: RequestHead) -> tuple[str, str]:
    """The (bucket, key) of ``x-amz-copy-source``; only the current version."""
    source_text = unquote(head.headers["x-amz-copy-source"])
    source_path, _, source_query = source_text.partition("?")
    source_bucket, _, source_key = source_path.lstrip("/").partition("/")
    if not source_bucket or not source_key:
        raise S3RequestError("InvalidArgument", "x-amz-copy-source must be /bucket/key")
    if dict(parse_qsl(source_query)).get("versionId", "null") != "null":
        raise not_implemented({"versionId"})
    return source_bucket, source_key


def _copy_conditions(head: RequestHead) -> dict[str, str]:
    """``x-amz-copy-source-if-*`` as the plain conditions ``read_outcome`` takes."""
    return {
        name.removeprefix("x-amz-copy-source-"): value
        for name, value in head.headers.items()
        if name.startswith("x-amz-copy-source-if-")
    }


def _stored_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The standard headers of a PUT that the object keeps (aws-chunked is transport)."""
    stored = {name: headers[name] for name in STORED_HEADERS if name in headers}
    encoding = stored.pop("content-encoding", "")
    kept = [e.strip() for e in encoding.split(",") if e.strip() and e.strip() != "aws-chunked"]
    if kept:
        stored["content-encoding"] = ",".join(kept)
    return stored


def _checksum_headers(head: RequestHead, info: ObjectInfo) -> dict[str, str]:
    """The object's checksums, for a whole-object read that asked for them."""
    if head.headers.get("x-amz-checksum-mode", "").upper() != "ENABLED" or not info.checksums:
        return {}
    headers = {f"x-amz-checksum-{name}": value for name, value in info.checksums.items()}
    headers["x-amz-checksum-type"] = "FULL_OBJECT"
    return headers


def _user_metadata(headers: Mapping[str, str]) -> dict[str, str]:
    """``x-amz-meta-*`` headers; values sent as UTF-8 bytes are decoded as UTF-8 (heads are
    decoded as latin-1, which keeps every byte)."""
    return {
        name[len("x-amz-meta-") :]: _from_wire(value)
        for name, value in headers.items()
        if name.startswith("x-amz-meta-")
    }


def _from_wire(value: str) -> str:
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return value


def _to_wire(value: str) -> str:
    """A metadata value for a response header: ASCII as it is, anything else RFC 2047
    encoded (``=?UTF-8?B?...?=``), as S3 answers non-ASCII metadata."""
    if value.isascii():
        return value
    return f"=?UTF-8?B?{base64.b64encode(value.encode('utf-8')).decode('ascii')}?="


def object_headers(info: ObjectInfo) -> dict[str, str]:
    headers = {
        "ETag": f'"{info.etag}"',
        "Last-Modified": http_date(info.modified_ms),
        "Content-Type": info.content_type,
        "Accept-Ranges": "bytes",
    }
    if info.parts_count:
        headers["x-amz-mp-parts-count"] = str(info.parts_count)
    for name, value in info.headers.items():
        headers["-".join(word.capitalize() for word in name.split("-"))] = value
    for name, value in info.metadata.items():
        headers[f"x-amz-meta-{name}"] = _to_wire(value)
    return headers


def xml_response(document: bytes) -> Response:
    return Response(200, {"Content-Type": "application/xml"}, document)
