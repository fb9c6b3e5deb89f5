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
the aws CLI accepts with ``addressing_style = path``. Authentication is a SigV4 header, a
SigV4 presigned URL or a SigV2 presigned URL (``sigv4``, ``sigv2``). This module routes
service and bucket operations; object operations are in ``s3objects`` (and ``s3copy``), and
an operation not served answers S3's ``NotImplemented`` before anything changes
(``s3ops``; docs/blob.md has the table).
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from blocks.blob.api import BlobStore
from blocks.blob.awschunked import S3RequestError, verified_checksums, verify_checksums
from blocks.blob.conditions import ConditionFailed
from blocks.blob.http import BODY_READ_TIMEOUT_S, RequestBody, RequestHead, Response
from blocks.blob.peers import SHARD_PREFIX, ShardHost, handle_shard_request
from blocks.blob.s3docs import delete_result, list_objects_v1_result, parse_delete_request
from blocks.blob.s3headers import parse_range, xml_response
from blocks.blob.s3objects import NotModified, ObjectOps
from blocks.blob.s3ops import not_implemented, refuse_encryption, subresources
from blocks.blob.s3xml import (
    error_document,
    http_date,
    list_buckets_result,
    list_objects_v2_result,
    list_uploads_result,
)
from blocks.blob.sigv2 import verify_presigned_v2
from blocks.blob.sigv4 import S3AuthError, verify_presigned, verify_request
from blocks.blob.store import OBJECT_BYTES_MAX
from blocks.blob.streaming import (
    STREAM_PIECE_BYTES,
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


class S3Handler(ObjectOps):
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
        except NotModified as unchanged:
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
        sigv2 = "authorization" not in head.headers and "AWSAccessKeyId=" in head.raw_query
        if sigv2 and self.config.credentials:
            verify_presigned_v2(
                head.method,
                head.raw_path,
                head.raw_query,
                head.headers,
                self.config.credentials,
                self.clock.now_ms(),
            )
        elif self.config.credentials:
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
        response = await self._route(head, payload, verified_checksums(echoed))
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
        # Streamed bodies are plain: their checksums are headers, verified before the commit.
        response = await self._route(head, streamed, verified_checksums(head.headers))
        response.headers.update(streamed.echoed)
        return response

    async def _route(
        self, head: RequestHead, payload: bytes | StreamedPayload, checksums: dict[str, str]
    ) -> Response:
        bucket, _, key = head.path.lstrip("/").partition("/")
        query = dict(parse_qsl(head.raw_query, keep_blank_values=True))
        method = head.method
        if not bucket:
            if method == "GET":
                return await self._list_buckets(query)
        elif not key:
            return await self._bucket(method, bucket, query, payload)
        elif method in ("GET", "HEAD"):
            return await self._read_object(head, bucket, key, query)
        elif method == "PUT":
            return await self._put(head, bucket, key, query, payload, checksums)
        elif method == "POST" and isinstance(payload, bytes):
            return await self._post(head, bucket, key, query, payload)
        elif method == "DELETE":
            return await self._delete(bucket, key, query)
        raise S3RequestError("NotImplemented", f"{method} is not implemented here", 501)

    async def _bucket(
        self, method: str, bucket: str, query: dict[str, str], payload: bytes | StreamedPayload
    ) -> Response:
        names = subresources(query)
        if method == "POST" and names == {"delete"} and isinstance(payload, bytes):
            return await self._delete_objects(bucket, payload)
        if method == "GET" and not names - {
            "prefix",
            "delimiter",
            "marker",
            "max-keys",
            "encoding-type",
        }:
            return await self._list_v1(bucket, query)
        if method == "PUT" and not names:
            await self.workers.run(self.store.create_bucket, bucket)
            return Response(200, {"Location": f"/{bucket}"})
        if method == "GET" and "uploads" in names:
            prefix = query.get("prefix", "")
            uploads = await self.workers.run(self.store.list_multipart_uploads, bucket, prefix)
            return xml_response(list_uploads_result(bucket, prefix, uploads))
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
            return xml_response(document.encode())
        if method == "GET" and query.get("list-type") == "2":
            return await self._list_v2(bucket, query)
        raise S3RequestError("NotImplemented", "this bucket operation is not implemented", 501)

    async def _list_buckets(self, query: dict[str, str]) -> Response:
        """ListBuckets, by name after ``continuation-token`` (the last name of the page
        before), at most ``max-buckets`` (1..10000) under ``prefix``."""
        names = subresources(query) - {
            "prefix",
            "max-buckets",
            "continuation-token",
            "bucket-region",
        }
        if names:
            raise not_implemented(names)
        max_text = query.get("max-buckets", "10000")
        if not max_text.isdigit() or not 1 <= int(max_text) <= 10000:
            raise S3RequestError("InvalidArgument", "max-buckets must be in 1..10000")
        prefix, after = query.get("prefix", ""), query.get("continuation-token", "")
        buckets = [
            b
            for b in await self.workers.run(self.store.list_buckets)
            if b.name.startswith(prefix) and b.name > after
        ]
        page = buckets[: int(max_text)]
        token = page[-1].name if len(buckets) > len(page) else None
        return xml_response(list_buckets_result(page, prefix, token))

    async def _delete_objects(self, bucket: str, payload: bytes) -> Response:
        keys, quiet = parse_delete_request(payload)

        def delete_all() -> tuple[list[str], list[tuple[str, str, str]]]:
            self.store.list_objects(bucket, max_keys=1)  # NoSuchBucket before anything
            deleted: list[str] = []
            errors: list[tuple[str, str, str]] = []
            for key in keys:
                try:
                    self.store.delete_object(bucket, key)
                except BlocksError as error:
                    errors.append((key, _map_error(error)[1], str(error)))
                    continue
                deleted.append(key)
            return deleted, errors

        deleted, errors = await self.workers.run(delete_all)
        return xml_response(delete_result([] if quiet else deleted, errors))

    async def _list_v1(self, bucket: str, query: dict[str, str]) -> Response:
        max_keys_text = query.get("max-keys", "1000")
        if not max_keys_text.isdigit():
            raise S3RequestError("InvalidArgument", "max-keys must be a non-negative integer")
        max_keys = min(int(max_keys_text), 1000)
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
        marker = query.get("marker", "")
        # A marker that is a common prefix stands for everything under it.
        start_after = marker + "\U0010ffff" if delimiter and marker.endswith(delimiter) else marker
        page = await self.workers.run(
            lambda: self.store.list_objects(
                bucket,
                prefix=prefix,
                delimiter=delimiter,
                max_keys=max_keys,
                start_after=start_after,
            )
        )
        document = list_objects_v1_result(
            bucket, page, prefix=prefix, delimiter=delimiter, marker=marker, max_keys=max_keys
        )
        return xml_response(document)

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
            fetch_owner=query.get("fetch-owner") == "true",
        )
        return xml_response(document)


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
