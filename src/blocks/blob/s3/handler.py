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
SigV4 presigned URL or a SigV2 presigned URL (``sigv4``, ``sigv2``); who may do what to a
bucket (owners, admin keys, the private/public-read policy, anonymous reads) is decided
from the head alone (``s3.access``): before a body of more than
``ACCESS_DEFERRED_BODY_BYTES_MAX`` is read (or ``100 Continue`` sent for it), and for an
empty or small body in the request's first worker-thread trip, just before its store call,
so a small request makes one trip, not two (``s3.deferred_access``). Either way nothing is read from or changed in
the store before it, and a refused request gets the same error as if it had been first.
This module routes service and bucket operations; object operations are in ``s3.objects``
(and ``s3.copy``), and an operation not served answers S3's ``NotImplemented`` before
anything changes (``s3.ops``; docs/blob.md has the table).
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from blocks.blob.api import BlobStore
from blocks.blob.cluster.peers import SHARD_PREFIX, ShardHost, handle_shard_request
from blocks.blob.s3.access import (
    PRIVATE,
    AccessStore,
    Action,
    acl_document,
    canned_acl,
    classify,
    decide,
)
from blocks.blob.s3.awschunked import S3RequestError, verified_checksums, verify_checksums
from blocks.blob.s3.buckets import BucketOps, map_error
from blocks.blob.s3.copy import copy_source
from blocks.blob.s3.deferred_access import (
    ACCESS_DEFERRED_BODY_BYTES_MAX,
    PENDING_ACCESS,
    AccessWorkers,
    defers_access,
)
from blocks.blob.s3.headers import parse_range, xml_response
from blocks.blob.s3.http import BODY_READ_TIMEOUT_S, RequestBody, RequestHead, Response
from blocks.blob.s3.objects import NotModified, ObjectOps
from blocks.blob.s3.ops import not_implemented, refuse_encryption, subresources
from blocks.blob.s3.sigv2 import verify_presigned_v2
from blocks.blob.s3.sigv4 import S3AuthError, SigningContext, verify_presigned, verify_request
from blocks.blob.s3.streaming import (
    STREAM_PIECE_BYTES,
    StreamedPayload,
    decode_payload,
    streamable,
)
from blocks.blob.s3.workers import UPLOADS_MAX, Workers
from blocks.blob.s3.xml import (
    error_document,
    http_date,
)
from blocks.blob.storage.versioned import DeleteMarkerFound
from blocks.blob.store import OBJECT_BYTES_MAX
from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import BlocksError, InvalidArgument

__all__ = ["ACCESS_DEFERRED_BODY_BYTES_MAX", "S3Config", "S3Handler", "parse_range"]

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
    admins: frozenset[str] | None = None
    """The keys of ``credentials`` that may do anything (``s3.access``); ``None``: all of
    them (one configured key, as before owners were kept)."""


class S3Handler(ObjectOps, BucketOps):
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
        self.access_store = store if isinstance(store, AccessStore) else None
        if self.config.admins is not None and self.access_store is None:
            raise InvalidArgument("several access keys need a store that keeps bucket owners")
        self.clock: Clock = clock or SystemClock()
        self._request_ids = itertools.count(1)
        self.workers: Workers = AccessWorkers(self.config.uploads_max)
        self.bodies_too_large = 0
        """Requests refused because their declared body was over the limit."""
        self.aws_chunked_bodies = 0
        """How many request bodies arrived aws-chunked (boto3 does so over HTTPS)."""
        self.requests_in_flight = 0
        """Requests inside ``handle`` (event-loop state), this one included."""
        self.connections_open = 0
        """Client connections the server holds (``BlobServer`` keeps it; event-loop state)."""
        self.inline_writes = 0
        """Small PUTs committed on the event loop (``ObjectOps._put_runner``)."""

    @property
    def region(self) -> str:
        return self.config.region

    async def handle(
        self,
        head: RequestHead,
        send_continue: Callable[[], Awaitable[None]],
        body: RequestBody,
    ) -> Response:
        request_id = f"{next(self._request_ids):016X}"
        self.requests_in_flight += 1
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
            status, code = map_error(error)
            response = _error(status, code, str(error), head.raw_path, request_id)
            if isinstance(error, DeleteMarkerFound):
                response.headers["x-amz-delete-marker"] = "true"
                response.headers["x-amz-version-id"] = error.version_id
        finally:
            self.requests_in_flight -= 1
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
        principal: str | None = None
        presigned = "authorization" not in head.headers and "X-Amz-Signature=" in head.raw_query
        sigv2 = "authorization" not in head.headers and "AWSAccessKeyId=" in head.raw_query
        anonymous = "authorization" not in head.headers and not presigned and not sigv2
        # An anonymous request is allowed only where a bucket's policy says so (below).
        signed = (head.method, head.raw_path, head.raw_query, head.headers)
        if sigv2 and self.config.credentials:
            principal = verify_presigned_v2(*signed, self.config.credentials, self.clock.now_ms())
        elif self.config.credentials and not anonymous:
            verify = verify_presigned if presigned else verify_request
            context = verify(*signed, self.config.credentials, self.clock.now_ms())
            principal = context.access_key
        check = self._access_check(head, principal) if self.config.credentials else None
        if check is None:
            return await self._serve(head, send_continue, body, context, principal)
        if not defers_access(body):
            await self.workers.run(check)
            return await self._serve(head, send_continue, body, context, principal)
        # The check runs first in the request's first worker call (``AccessWorkers``):
        # one thread trip, not two. Whatever fails before that call still answers as if the
        # check had run first, so a refused caller learns nothing else.
        token = PENDING_ACCESS.set(check)
        try:
            response = await self._serve(head, send_continue, body, context, principal)
        except Exception:
            if PENDING_ACCESS.get() is not None:
                PENDING_ACCESS.set(None)
                await self.workers.run(check)
            raise
        finally:
            pending = PENDING_ACCESS.get()
            PENDING_ACCESS.reset(token)
        if pending is not None:  # answered without the store: still the caller's to ask
            await self.workers.run(pending)
        return response

    async def _serve(
        self,
        head: RequestHead,
        send_continue: Callable[[], Awaitable[None]],
        body: RequestBody,
        context: SigningContext | None,
        principal: str | None,
    ) -> Response:
        """The request past authentication and the access check (or with the check
        pending: see ``_handle``)."""
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
                return await self._stream(head, send_continue, body, principal)
            finally:
                self.workers.release_upload()
        if head.headers.get("expect", "").lower() == "100-continue":
            await send_continue()
        data = await body.read_all(self.config.body_bytes_max)
        payload, checks = decode_payload(head, data, context)
        self.aws_chunked_bodies += payload is not data
        if head.method == "POST" and "uploadId=" in head.raw_query:
            # CompleteMultipartUpload's checksum headers name the object, not the XML body.
            checks = {k: v for k, v in checks.items() if not k.startswith("x-amz-checksum-")}
        echoed = verify_checksums(payload, checks)
        response = await self._route(head, payload, verified_checksums(echoed), principal)
        response.headers.update(echoed)
        return response

    async def _stream(
        self,
        head: RequestHead,
        send_continue: Callable[[], Awaitable[None]],
        body: RequestBody,
        principal: str | None,
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
        response = await self._route(head, streamed, verified_checksums(head.headers), principal)
        response.headers.update(streamed.echoed)
        return response

    def _is_admin(self, principal: str | None) -> bool:
        admins = self.config.admins
        return principal is not None and (admins is None or principal in admins)

    def _access_check(self, head: RequestHead, principal: str | None) -> Callable[[], None] | None:
        """The access rule for a request (``s3.access.decide``) as a function to run in a
        worker thread (it takes the store lock), or ``None`` when it was decided here
        without the store. Without a store that keeps owners, every signed key may do
        anything."""
        bucket, _, key = head.path.lstrip("/").partition("/")
        query = _query(head.raw_query)
        action = classify(head.method, bucket, key, query)
        store = self.access_store
        if store is None:
            decide(principal, True, action, None)
            return None
        admin = self._is_admin(principal)
        if action in (Action.LIST_BUCKETS, Action.CREATE_BUCKET):
            decide(principal, admin, action, None)
            return None
        copies = bool(key) and head.method == "PUT" and "x-amz-copy-source" in head.headers

        def check() -> None:
            decide(principal, admin, action, store.bucket_access(bucket))
            if copies:  # a copy reads its source: READ there too
                decide(principal, admin, Action.READ, store.bucket_access(copy_source(head)[0]))

        return check

    async def _route(
        self,
        head: RequestHead,
        payload: bytes | StreamedPayload,
        checksums: dict[str, str],
        principal: str | None = None,
    ) -> Response:
        bucket, _, key = head.path.lstrip("/").partition("/")
        query = _query(head.raw_query)
        method = head.method
        if not bucket:
            if method == "GET":
                everyone = not self.config.credentials or self._is_admin(principal)
                visible = None if everyone else principal or ""
                return await self._list_buckets(query, visible)
        elif not key and self.access_store is not None and "acl" in query:
            return await self._bucket_acl(head, bucket, query, payload)
        elif not key and method == "PUT" and not subresources(query):
            return await self._create_bucket(head, bucket, principal or "")
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

    async def _create_bucket(self, head: RequestHead, bucket: str, owner: str) -> Response:
        """CreateBucket, owned by the signing key, with the policy ``x-amz-acl`` names."""
        if self.access_store is None:
            await self.workers.run(self.store.create_bucket, bucket)
        else:
            acl = canned_acl(head.headers, PRIVATE)
            await self.workers.run(self.access_store.create_bucket, bucket, owner, acl)
        return Response(200, {"Location": f"/{bucket}"})

    async def _bucket_acl(
        self,
        head: RequestHead,
        bucket: str,
        query: dict[str, str],
        payload: bytes | StreamedPayload,
    ) -> Response:
        """GetBucketAcl and PutBucketAcl with a canned ``x-amz-acl`` (``s3.access``)."""
        store = self.access_store
        assert store is not None
        names = subresources(query)
        if names != {"acl"}:
            raise not_implemented(names)
        if head.method == "GET":
            access = await self.workers.run(store.bucket_access, bucket)
            if access is None:
                raise S3RequestError("NoSuchBucket", "The specified bucket does not exist", 404)
            return xml_response(acl_document(*access))
        if head.method != "PUT" or payload:
            raise S3RequestError("NotImplemented", "only canned bucket ACLs are served", 501)
        acl = canned_acl(head.headers, None)
        if acl is None:
            raise S3RequestError("NotImplemented", "only canned bucket ACLs are served", 501)
        await self.workers.run(store.set_bucket_acl, bucket, acl)
        return Response(200)


def _query(raw_query: str) -> dict[str, str]:
    """The query's parameters, a repeated name's last value kept; without parsing when
    there is none (most GETs and PUTs: ``parse_qsl`` of nothing costs ~2 us, twice a
    request)."""
    return dict(parse_qsl(raw_query, keep_blank_values=True)) if raw_query else {}


def _error(status: int, code: str, message: str, resource: str, request_id: str) -> Response:
    body = error_document(code, message, resource, request_id)
    return Response(status, {"Content-Type": "application/xml"}, body)
