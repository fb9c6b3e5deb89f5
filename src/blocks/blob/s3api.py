"""The S3 request handler: authenticate, decode the body, route to the store, shape replies.

Theory of operation. ``S3Handler.handle`` takes a parsed request head, a callback that sends
``100 Continue`` and the request's body (``http.RequestBody``), and returns a ``Response``.
The order matters: the signature is checked on the head *before* the body is read, so a
client with a wrong key is refused without uploading anything. A large plain PUT or
UploadPart body is then *streamed* into the store (``awschunked.StreamedPayload``): chunks are
hashed, encoded and written while the rest arrives, and the signed SHA-256 and checksums are
checked after the last byte, before the commit, so a mismatch commits nothing. Other bodies
are read whole (bounded), decoded if aws-chunked (verifying chunk signatures), checked the
same way and only then handed to the store. A GET answers with the object's pieces, which
the server sends as they are read; the first piece is read here so that a missing or
unreadable first chunk still gets a proper S3 error. Store calls run in the server's own
bounded pools (``workers.Workers``: streamed uploads apart from everything else) so the event
loop keeps serving and a stalled upload never holds up a read.

Limits a client can reach, each an S3 error and a counter: a declared body larger than
``object_bytes_max`` (a PUT) or ``body_bytes_max`` (a body read whole) is refused with
``EntityTooLarge`` before any of it is read (``bodies_too_large``); a body slower than
``body_read_timeout_s`` per MiB is cut with ``RequestTimeout`` (the server counts it); a
streamed upload past ``uploads_max`` gets ``SlowDown`` (``workers.uploads_refused``).

Requests use path-style addressing (``/bucket/key``), which boto3 picks for an IP endpoint and
the aws CLI accepts with ``addressing_style = path``. The operations are the issue's subset
plus HeadBucket and GetBucketLocation; anything else answers S3's ``NotImplemented``.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from blocks.blob.api import BlobStore, ObjectInfo
from blocks.blob.awschunked import S3RequestError, verify_checksums
from blocks.blob.conditions import ConditionFailed, WriteCondition, check_write, read_outcome
from blocks.blob.http import BODY_READ_TIMEOUT_S, RequestBody, RequestHead, Response
from blocks.blob.listing import resolve_range
from blocks.blob.peers import SHARD_PREFIX, ShardHost, handle_shard_request
from blocks.blob.s3ops import (
    not_implemented,
    refuse_encryption,
    response_overrides,
    subresources,
)
from blocks.blob.s3xml import (
    attributes_result,
    complete_result,
    error_document,
    http_date,
    initiate_result,
    list_buckets_result,
    list_objects_v2_result,
    list_parts_result,
    list_uploads_result,
    parse_complete_request,
)
from blocks.blob.sigv4 import S3AuthError, verify_presigned, verify_request
from blocks.blob.store import OBJECT_BYTES_MAX
from blocks.blob.streaming import (
    STREAM_PIECE_BYTES,
    ObjectBody,
    StreamedPayload,
    decode_payload,
    streamable,
)
from blocks.blob.workers import UPLOADS_MAX, Workers
from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import (
    BlocksError,
    Conflict,
    Corruption,
    InvalidArgument,
    NotFound,
    Unavailable,
)

__all__ = ["S3Config", "S3Handler", "parse_range"]

SHARD_BODY_BYTES_MAX = 80 * 1024 * 1024
INLINE_BODY_BYTES_MAX = 256 * 1024
"""GET bodies up to this size that arrive in one piece are sent from the event loop as one
buffer; larger ones stream, each next piece read in a worker thread while one is sent."""
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class S3Config:
    """``credentials`` maps access key ids to secrets; empty means no authentication."""

    credentials: Mapping[str, str] = field(default_factory=dict)
    body_bytes_max: int = 512 * 1024 * 1024
    """Largest body read whole into memory (small PUTs, aws-chunked bodies, XML)."""
    object_bytes_max: int = OBJECT_BYTES_MAX
    """Largest PutObject or UploadPart body (S3's own limit for one PUT is 5 GiB)."""
    body_read_timeout_s: float = BODY_READ_TIMEOUT_S
    """Time a body has to deliver each MiB; slower or idle bodies get RequestTimeout."""
    uploads_max: int = UPLOADS_MAX
    """Streamed uploads in flight at once; past it, SlowDown."""
    region: str = "us-east-1"
    cluster_token: str | None = None
    """Bearer token peers present on ``/_shards``; ``None`` turns the shard routes off."""


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


class S3Handler:
    """Serves the S3 subset over one ``BlobStore``."""

    def __init__(
        self,
        store: BlobStore,
        config: S3Config | None = None,
        clock: Clock | None = None,
        local_shards: ShardHost | None = None,
    ) -> None:
        self.store = store
        self.local_shards = local_shards
        self.config = config or S3Config()
        self.clock: Clock = clock or SystemClock()
        self._request_ids = itertools.count(1)
        self.workers = Workers(self.config.uploads_max)
        self.bodies_too_large = 0
        """Requests refused because their declared body was over the limit."""
        self.aws_chunked_bodies = 0
        """How many request bodies arrived aws-chunked (boto3 does so over HTTPS)."""

    async def handle(
        self,
        head: RequestHead,
        send_continue: Callable[[], Awaitable[None]],
        body: RequestBody,
    ) -> Response:
        request_id = f"{next(self._request_ids):016X}"
        try:
            response = await self._handle(head, send_continue, body)
        except _NotModified as unchanged:
            info = unchanged.args[0]
            headers = {"ETag": f'"{info.etag}"', "Last-Modified": http_date(info.modified_ms)}
            response = Response(304, headers)
        except S3AuthError as error:
            response = _error(403, error.code, error.message, head.raw_path, request_id)
        except S3RequestError as error:
            response = _error(error.status, error.code, error.message, head.raw_path, request_id)
        except BlocksError as error:
            status, code = _map_error(error)
            response = _error(status, code, str(error), head.raw_path, request_id)
        response.headers["x-amz-request-id"] = request_id
        response.headers.setdefault("Date", http_date(self.clock.now_ms()))
        response.headers.setdefault("Server", "blocks-blob")
        return response

    async def _handle(
        self,
        head: RequestHead,
        send_continue: Callable[[], Awaitable[None]],
        body: RequestBody,
    ) -> Response:
        if self.local_shards is not None and (
            head.raw_path == SHARD_PREFIX or head.raw_path.startswith(SHARD_PREFIX + "/")
        ):
            data = await body.read_all(SHARD_BODY_BYTES_MAX)
            return await self.workers.run_shard(
                handle_shard_request, head, data, self.local_shards, self.config.cluster_token
            )
        context = None
        presigned = "authorization" not in head.headers and "X-Amz-Signature=" in head.raw_query
        if "authorization" not in head.headers and "AWSAccessKeyId=" in head.raw_query:
            raise S3RequestError("NotImplemented", "SigV2 presigned URLs are not supported", 501)
        if self.config.credentials:
            verify = verify_presigned if presigned else verify_request
            context = verify(
                head.method,
                head.raw_path,
                head.raw_query,
                head.headers,
                self.config.credentials,
                self.clock.now_ms(),
            )
        refuse_encryption(head.headers)
        stream = streamable(head, body)
        limit = self.config.object_bytes_max if stream else self.config.body_bytes_max
        if body.length is not None and body.length > limit:
            self.bodies_too_large += 1
            raise S3RequestError(
                "EntityTooLarge", f"the body is larger than the limit of {limit} bytes"
            )
        await self._check_write_early(head)
        if stream:
            if not self.workers.try_take_upload():
                raise S3RequestError("SlowDown", "too many uploads in flight; retry", 503)
            try:
                return await self._stream(head, send_continue, body)
            finally:
                self.workers.release_upload()
        if head.headers.get("expect", "").lower() == "100-continue":
            await send_continue()
        data = await body.read_all(self.config.body_bytes_max)
        payload, checks = decode_payload(head, data, context)
        self.aws_chunked_bodies += payload is not data
        echoed = verify_checksums(payload, checks)
        response = await self._route(head, payload)
        response.headers.update(echoed)
        return response

    async def _stream(
        self,
        head: RequestHead,
        send_continue: Callable[[], Awaitable[None]],
        body: RequestBody,
    ) -> Response:
        """A plain PutObject or UploadPart body stored while it arrives (upload slot held)."""
        if head.headers.get("expect", "").lower() == "100-continue":
            await send_continue()
        payload_hash = head.headers.get("x-amz-content-sha256", "")
        streamed = StreamedPayload(
            body.read_piece,
            asyncio.get_running_loop(),
            head.headers,
            payload_hash if _HEX64.match(payload_hash) else None,
            getattr(self.store, "chunk_bytes", STREAM_PIECE_BYTES),
            self.config.body_read_timeout_s,
        )
        response = await self._route(head, streamed)
        response.headers.update(streamed.echoed)
        return response

    async def _route(self, head: RequestHead, payload: bytes | StreamedPayload) -> Response:
        bucket, _, key = head.path.lstrip("/").partition("/")
        query = dict(parse_qsl(head.raw_query, keep_blank_values=True))
        method = head.method
        if not bucket:
            if method == "GET":
                buckets = await self.workers.run(self.store.list_buckets)
                return _xml(list_buckets_result(buckets))
        elif not key:
            return await self._bucket(method, bucket, query)
        elif method in ("GET", "HEAD"):
            return await self._read_object(head, bucket, key, query)
        elif method == "PUT":
            return await self._put(head, bucket, key, query, payload)
        elif method == "POST" and isinstance(payload, bytes):
            return await self._post(head, bucket, key, query, payload)
        elif method == "DELETE":
            return await self._delete(bucket, key, query)
        raise S3RequestError("NotImplemented", f"{method} is not implemented here", 501)

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
            response = _xml(document)
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
        return _xml(list_parts_result(bucket, key, upload_id, parts, max_parts, int(marker_text)))

    async def _bucket(self, method: str, bucket: str, query: dict[str, str]) -> Response:
        names = subresources(query)
        if method == "PUT" and not names:
            await self.workers.run(self.store.create_bucket, bucket)
            return Response(200, {"Location": f"/{bucket}"})
        if method == "GET" and "uploads" in names:
            prefix = query.get("prefix", "")
            uploads = await self.workers.run(self.store.list_multipart_uploads, bucket, prefix)
            return _xml(list_uploads_result(bucket, prefix, uploads))
        if method == "DELETE" and not names:
            await self.workers.run(self.store.delete_bucket, bucket)
            return Response(204)
        if method == "HEAD":
            await self.workers.run(lambda: self.store.list_objects(bucket, max_keys=1))
            return Response(200, {"x-amz-bucket-region": self.config.region})
        if method == "GET" and "location" in query:
            await self.workers.run(lambda: self.store.list_objects(bucket, max_keys=1))
            document = (
                '<?xml version="1.0" encoding="UTF-8"?>\n<LocationConstraint '
                'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"/>'
            )
            return _xml(document.encode())
        if method == "GET" and query.get("list-type") == "2":
            return await self._list_v2(bucket, query)
        raise S3RequestError("NotImplemented", "this bucket operation is not implemented", 501)

    async def _list_v2(self, bucket: str, query: dict[str, str]) -> Response:
        max_keys_text = query.get("max-keys", "1000")
        if not max_keys_text.isdigit():
            raise S3RequestError("InvalidArgument", "max-keys must be a non-negative integer")
        max_keys = min(int(max_keys_text), 1000)
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
        start_after, token = query.get("start-after", ""), query.get("continuation-token")
        page = await self.workers.run(
            lambda: self.store.list_objects(
                bucket,
                prefix=prefix,
                delimiter=delimiter,
                max_keys=max_keys,
                start_after=start_after,
                continuation_token=token or None,
            )
        )
        document = list_objects_v2_result(
            bucket,
            page,
            prefix=prefix,
            delimiter=delimiter,
            max_keys=max_keys,
            start_after=start_after,
            continuation_token=token,
            url_encode=query.get("encoding-type") == "url",
        )
        return _xml(document)

    async def _get(self, head: RequestHead, bucket: str, key: str) -> Response:
        if head.method == "HEAD":
            info = await self.workers.run(self.store.head_object, bucket, key)
            _check_read(head, info)
            return Response(200, _object_headers(info), content_length=info.size)
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
        headers = _object_headers(info)
        start, stop = resolve_range(byte_range, info.size)
        status = 200 if byte_range is None else 206
        if byte_range is not None:
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{info.size}"
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
    ) -> Response:
        if "x-amz-copy-source" in head.headers:
            raise S3RequestError("NotImplemented", "CopyObject is not implemented", 501)
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
            )
        )
        return Response(200, {"ETag": f'"{info.etag}"'})

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
            return _xml(initiate_result(bucket, key, upload_id))
        if "uploadId" in query:
            parts = parse_complete_request(payload)
            info = await self.workers.run(
                self.store.complete_multipart_upload, bucket, key, query["uploadId"], parts
            )
            return _xml(complete_result(f"/{bucket}/{key}", bucket, key, info.etag))
        raise S3RequestError("NotImplemented", "this POST operation is not implemented", 501)


class _NotModified(Exception):
    """A conditional read whose object has not changed: answered 304."""


def _check_read(head: RequestHead, info: ObjectInfo) -> None:
    outcome = read_outcome(head.headers, info.etag, info.modified_ms)
    if outcome == 412:
        raise S3RequestError("PreconditionFailed", "a read precondition does not hold", 412)
    if outcome == 304:
        raise _NotModified(info)


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


def _object_headers(info: ObjectInfo) -> dict[str, str]:
    headers = {
        "ETag": f'"{info.etag}"',
        "Last-Modified": http_date(info.modified_ms),
        "Content-Type": info.content_type,
        "Accept-Ranges": "bytes",
    }
    if info.parts_count:
        headers["x-amz-mp-parts-count"] = str(info.parts_count)
    for name, value in info.metadata.items():
        headers[f"x-amz-meta-{name}"] = _to_wire(value)
    return headers


def _xml(document: bytes) -> Response:
    return Response(200, {"Content-Type": "application/xml"}, document)


def _error(status: int, code: str, message: str, resource: str, request_id: str) -> Response:
    body = error_document(code, message, resource, request_id)
    return Response(status, {"Content-Type": "application/xml"}, body)


def _map_error(error: BlocksError) -> tuple[int, str]:
    text = str(error)
    if isinstance(error, ConditionFailed):
        return 412, "PreconditionFailed"
    if isinstance(error, NotFound):
        if text.startswith("no such bucket"):
            return 404, "NoSuchBucket"
        return (404, "NoSuchUpload") if text.startswith("no such upload") else (404, "NoSuchKey")
    if isinstance(error, Conflict):
        return (409, "BucketNotEmpty") if "not empty" in text else (409, "BucketAlreadyOwnedByYou")
    if isinstance(error, InvalidArgument):
        for marker, code in (
            ("bucket name", "InvalidBucketName"),
            ("EntityTooSmall", "EntityTooSmall"),
            ("InvalidPartOrder", "InvalidPartOrder"),
            ("larger than", "EntityTooLarge"),
            ("part", "InvalidPart"),
            ("key", "KeyTooLongError" if "1024" in text else "InvalidArgument"),
        ):
            if marker in text:
                return 400, code
        return 400, "InvalidArgument"
    if isinstance(error, Corruption):
        return 500, "InternalError"
    if isinstance(error, Unavailable):
        return 503, "ServiceUnavailable"
    return 503, "ServiceUnavailable"
