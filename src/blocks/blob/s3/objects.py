"""S3 object operations: GET/HEAD (ranges, conditionals, overrides, attributes), PUT,
the multipart POSTs, DELETE, ListParts; the ``S3Handler``'s object half (copies are in
``s3.copy``, header shaping in ``s3.headers``).

Theory of operation. ``S3Handler`` authenticates, bounds and decodes a request, then routes
object paths here. Every method first decides the operation from the query's subresources
(``s3.ops``): anything not served is 501 before the store is touched. Store calls run on the
handler's pools (``workers``); streamed bodies on the uploads pool. Conditional reads are
evaluated on the object actually opened (``conditions.read_outcome``), conditional writes
before the body is read and again at the commit point (``conditions.check_write``).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from blocks.blob.api import BlobStore, ObjectInfo, PartInfo
from blocks.blob.checksums import ChecksumMismatch
from blocks.blob.conditions import WriteCondition, check_write, read_outcome
from blocks.blob.listing import resolve_range
from blocks.blob.s3.awschunked import S3RequestError, verified_checksums
from blocks.blob.s3.checksums import complete_part_checksums, response_checksums, upload_algorithm
from blocks.blob.s3.copy import CopyOps
from blocks.blob.s3.deferred_access import PENDING_ACCESS
from blocks.blob.s3.headers import (
    object_headers,
    parse_range,
    stored_headers,
    user_metadata,
    version_header,
    xml_response,
)
from blocks.blob.s3.http import RequestHead, Response
from blocks.blob.s3.ops import not_implemented, response_overrides, subresources
from blocks.blob.s3.streaming import ObjectBody, StreamedPayload
from blocks.blob.s3.workers import Workers
from blocks.blob.s3.xml import (
    attributes_result,
    complete_result,
    http_date,
    initiate_result,
    list_parts_result,
    parse_complete_request,
)
from blocks.blob.store import LocalBlobStore
from blocks.core.errors import InvalidArgument, NotFound

__all__ = ["INLINE_BODY_BYTES_MAX", "NotModified", "ObjectOps"]

INLINE_BODY_BYTES_MAX = 256 * 1024
"""GET bodies up to this size that arrive in one piece are sent from the event loop as one
buffer; larger ones stream, each next piece read in a worker thread while one is sent."""


class ObjectOps(CopyOps):
    """The object operations of ``S3Handler`` (see the module docstring)."""

    store: BlobStore
    workers: Workers
    requests_in_flight: int
    connections_open: int
    inline_writes: int

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
            return Response(204)
        if names and names != {"versionId"}:
            raise not_implemented(names)
        if not isinstance(self.store, LocalBlobStore):
            if names and query["versionId"] != "null":
                raise not_implemented(names)
            await self.workers.run(self.store.delete_object, bucket, key)  # the only version
            return Response(204)
        asked = query.get("versionId")
        outcome = await self.workers.run(self.store.delete_version, bucket, key, asked)
        headers = {"x-amz-version-id": outcome.version_id} if outcome.version_id else {}
        if outcome.delete_marker:
            headers["x-amz-delete-marker"] = "true"
        return Response(204, headers)

    async def _read_object(
        self, head: RequestHead, bucket: str, key: str, query: dict[str, str]
    ) -> Response:
        names = subresources(query)
        if head.method == "GET" and "uploadId" in names:
            if names - {"uploadId", "max-parts", "part-number-marker"}:
                raise not_implemented(names)
            return await self._list_parts(bucket, key, query)
        version_id = query.get("versionId")
        if version_id is not None:
            names.discard("versionId")
            if version_id != "null" and not isinstance(self.store, LocalBlobStore):
                raise not_implemented({"versionId"})
        if head.method == "GET" and names == {"attributes"}:
            info = await self.workers.run(self._head, bucket, key, version_id)
            wanted = head.headers.get("x-amz-object-attributes", "").lower()
            document = attributes_result(info, {w.strip() for w in wanted.split(",")})
            response = xml_response(document)
            response.headers["Last-Modified"] = http_date(info.modified_ms)
            response.headers.update(version_header(info))
            return response
        part_range = None
        if names == {"partNumber"}:
            part_range = await self._part_range(bucket, key, query["partNumber"], version_id)
        elif names:
            raise not_implemented(names)
        response = await self._get(head, bucket, key, part_range, version_id)
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

    def _put_runner(self, payload: bytes | StreamedPayload) -> Callable[..., Awaitable[ObjectInfo]]:
        """Where a PutObject's store call runs: a streamed body on the uploads pool; a body
        the local store keeps inline in its journal (no chunk files, no peers) on the event
        loop when the server holds one client connection, this is the only request in
        flight and the store is not near a compaction (``Workers.run_inline``: the same
        journal write and fsync, without the thread trip); anything else on the requests
        pool. With several connections another PUT may arrive during the fsync: in the pool
        the two share the next one (group commit); on a blocked loop they could not."""
        if isinstance(payload, StreamedPayload):
            return self.workers.run_upload
        store = self.store
        if (
            isinstance(store, LocalBlobStore)
            and store.inline_bytes_max > 0
            and len(payload) <= store.inline_bytes_max
            and self.connections_open <= 1
            and self.requests_in_flight == 1
            and self.workers.idle()
            and not store.compaction_near(len(payload))
        ):
            self.inline_writes += 1
            return self.workers.run_inline
        return self.workers.run

    def _head(self, bucket: str, key: str, version_id: str | None = None) -> ObjectInfo:
        """HeadObject of the current object or of one version (``null``: the only one of a
        store that keeps none)."""
        if version_id is None or not isinstance(self.store, LocalBlobStore):
            return self.store.head_object(bucket, key)
        return self.store.head_object(bucket, key, version_id)

    async def _part_range(
        self, bucket: str, key: str, number_text: str, version_id: str | None = None
    ) -> tuple[int, int] | None:
        """The byte range of part ``number_text`` (a single PUT is part 1, all of it);
        ``None`` for an empty object."""
        info = await self.workers.run(self._head, bucket, key, version_id)
        sizes = info.part_sizes or (info.size,)
        if not number_text.isdigit() or not 1 <= int(number_text) <= len(sizes):
            raise S3RequestError("InvalidPartNumber", f"the object has {len(sizes)} part(s)", 416)
        number = int(number_text)
        start = sum(sizes[: number - 1])
        return (start, start + sizes[number - 1] - 1) if sizes[number - 1] else None

    async def _get(
        self,
        head: RequestHead,
        bucket: str,
        key: str,
        part_range: tuple[int, int] | None = None,
        version_id: str | None = None,
    ) -> Response:
        if head.method == "HEAD":
            info = await self.workers.run(self._head, bucket, key, version_id)
            _check_read(head, info)
            headers = object_headers(info)
            if part_range is None:
                headers.update(_checksum_headers(head, info))
                return Response(200, headers, content_length=info.size)
            start, stop = resolve_range(part_range, info.size)
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{info.size}"
            return Response(206, headers, content_length=stop - start)
        byte_range = part_range or parse_range(head.headers.get("range"))
        try:
            cached = self._read_nowait(bucket, key, byte_range, version_id)
            if cached is None:
                info, body = await self.workers.run(
                    self._open_body, bucket, key, byte_range, version_id
                )
            else:  # a small object the store had in memory: no thread trip
                info, body = cached[0], ObjectBody(iter([cached[1]]))
                body.prefetch()
        except InvalidArgument as error:
            if byte_range is None or str(error).startswith("invalid version id"):
                raise
            size = (await self.workers.run(self._head, bucket, key, version_id)).size
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

    def _read_nowait(
        self,
        bucket: str,
        key: str,
        byte_range: tuple[int, int] | None,
        version_id: str | None,
    ) -> tuple[ObjectInfo, bytes] | None:
        """The object and its bytes if the store answers without waiting
        (``LocalBlobStore.read_cached``), else ``None``. The request's pending access check
        (``deferred_access.PENDING_ACCESS``), if any, runs first under the store's lock: it
        is done (cleared) whenever the store answered, its answer an error included; still
        pending when the store said ``None``."""
        if not isinstance(self.store, LocalBlobStore):
            return None
        check = PENDING_ACCESS.get()
        try:
            found = self.store.read_cached(bucket, key, byte_range, version_id, check)
        except BaseException:
            PENDING_ACCESS.set(None)
            raise
        if found is not None:
            PENDING_ACCESS.set(None)
        return found

    def _open_body(
        self,
        bucket: str,
        key: str,
        byte_range: tuple[int, int] | None,
        version_id: str | None = None,
    ) -> tuple[ObjectInfo, ObjectBody]:
        """The object and its body with the first piece read: one worker-thread trip."""
        if version_id is None or not isinstance(self.store, LocalBlobStore):
            info, pieces = self.store.iter_object(bucket, key, byte_range)
        else:
            info, pieces = self.store.iter_object(bucket, key, byte_range, version_id)
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
            number, upload_id = int(number_text), query["uploadId"]
            upload_part: Callable[..., PartInfo] = self.store.upload_part
            if isinstance(self.store, LocalBlobStore):  # keeps part checksums
                upload_part = functools.partial(self.store.upload_part, checksums=checksums)
            part = await run(upload_part, bucket, key, upload_id, number, payload)
            return Response(200, {"ETag": f'"{part.etag}"'})
        if subresources(query):
            raise not_implemented(subresources(query))
        condition = WriteCondition.from_headers(head.headers)
        run_put = self._put_runner(payload)
        info = await run_put(
            lambda: self.store.put_object(
                bucket,
                key,
                payload,
                content_type=head.headers.get("content-type", "application/octet-stream"),
                metadata=user_metadata(head.headers),
                condition=condition,
                checksums=checksums,
                headers=stored_headers(head.headers),
            )
        )
        return Response(200, {"ETag": f'"{info.etag}"', **version_header(info)})

    async def _post(
        self, head: RequestHead, bucket: str, key: str, query: dict[str, str], payload: bytes
    ) -> Response:
        store = self.store
        if "uploads" in query:
            create = store.create_multipart_upload
            algorithm = upload_algorithm(head.headers)
            if algorithm and isinstance(store, LocalBlobStore):
                create = functools.partial(
                    store.create_multipart_upload, checksum_algorithm=algorithm
                )
            elif algorithm:
                raise S3RequestError("NotImplemented", "this store keeps no part checksums", 501)
            upload_id = await self.workers.run(
                lambda: create(
                    bucket,
                    key,
                    content_type=head.headers.get("content-type", "application/octet-stream"),
                    metadata=user_metadata(head.headers),
                    headers=stored_headers(head.headers),
                )
            )
            response = xml_response(initiate_result(bucket, key, upload_id))
            if algorithm:
                response.headers["x-amz-checksum-algorithm"] = algorithm.upper()
                response.headers["x-amz-checksum-type"] = "COMPOSITE"
            return response
        if "uploadId" in query:
            parts = parse_complete_request(payload)
            condition = WriteCondition.from_headers(head.headers)
            complete = store.complete_multipart_upload
            if isinstance(store, LocalBlobStore):
                complete = functools.partial(
                    store.complete_multipart_upload,
                    part_checksums=complete_part_checksums(payload),
                    checksums=verified_checksums(head.headers),
                )
            try:
                info = await self.workers.run(
                    lambda: complete(bucket, key, query["uploadId"], parts, condition=condition)
                )
            except ChecksumMismatch as error:  # the named whole-object checksum differs
                raise S3RequestError("BadDigest", str(error)) from error
            location = f"/{bucket}/{key}"
            document = complete_result(location, bucket, key, info.etag, info.checksums)
            response = xml_response(document)
            response.headers.update(version_header(info))
            return response
        raise S3RequestError("NotImplemented", "this POST operation is not implemented", 501)


class NotModified(Exception):
    """A conditional read whose object has not changed: answered 304."""


def _check_read(head: RequestHead, info: ObjectInfo) -> None:
    outcome = read_outcome(head.headers, info.etag, info.modified_ms)
    if outcome == 412:
        raise S3RequestError("PreconditionFailed", "a read precondition does not hold", 412)
    if outcome == 304:
        raise NotModified(info)


def _checksum_headers(head: RequestHead, info: ObjectInfo) -> dict[str, str]:
    """The object's checksums, for a whole-object read that asked for them."""
    if head.headers.get("x-amz-checksum-mode", "").upper() != "ENABLED":
        return {}
    return response_checksums(info.checksums)
