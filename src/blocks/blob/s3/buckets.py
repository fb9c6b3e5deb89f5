"""S3 service and bucket operations: buckets, listings (v1, v2, versions, uploads),
DeleteObjects; the ``S3Handler``'s bucket half.

Theory of operation: as in ``s3.objects``, the query's subresources decide the operation and
anything not served is 501 before the store is touched; store calls run on the handler's
request pool. Versioning (Get/PutBucketVersioning, ListObjectVersions, DeleteObjects of
versions) needs a store that keeps versions (``LocalBlobStore`` and its replicated kind;
``versioned``). Listings are one bounded page (at most 1000 entries).
"""

from __future__ import annotations

from blocks.blob.api import BlobStore, ListPage
from blocks.blob.conditions import ConditionFailed
from blocks.blob.errors import BucketBusy, BucketExists, BucketNotEmpty, WriteConflict
from blocks.blob.s3.awschunked import S3RequestError
from blocks.blob.s3.docs import (
    delete_result,
    list_objects_v1_result,
    list_versions_result,
    parse_delete_request,
    parse_versioning_request,
    versioning_result,
)
from blocks.blob.s3.headers import xml_response
from blocks.blob.s3.http import Response
from blocks.blob.s3.ops import not_implemented, subresources
from blocks.blob.s3.streaming import StreamedPayload
from blocks.blob.s3.workers import Workers
from blocks.blob.s3.xml import list_buckets_result, list_objects_v2_result, list_uploads_result
from blocks.blob.storage.versioned import DeleteMarkerFound, DeleteOutcome
from blocks.blob.store import LocalBlobStore
from blocks.core.errors import (
    BlocksError,
    Conflict,
    Corruption,
    InvalidArgument,
    NotFound,
    Unavailable,
)

__all__ = ["BucketOps", "map_error"]


class BucketOps:
    """The bucket operations of ``S3Handler`` (see the module docstring)."""

    store: BlobStore
    workers: Workers

    @property
    def region(self) -> str:
        """The region HeadBucket names (the handler's configuration)."""
        raise NotImplementedError

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
        if names == {"versioning"} and method in ("GET", "PUT"):
            store = versioned_store(self.store)
            if method == "PUT" and isinstance(payload, bytes):
                status = parse_versioning_request(payload)
                await self.workers.run(store.set_bucket_versioning, bucket, status)
                return Response(200)
            return xml_response(
                versioning_result(await self.workers.run(store.bucket_versioning, bucket))
            )
        if method == "GET" and "versions" in names:
            return await self._list_versions(bucket, query)
        if method == "GET" and "uploads" in names:
            prefix = query.get("prefix", "")
            uploads = await self.workers.run(self.store.list_multipart_uploads, bucket, prefix)
            return xml_response(list_uploads_result(bucket, prefix, uploads))
        if method == "DELETE" and not names:
            await self.workers.run(self.store.delete_bucket, bucket)
            return Response(204)
        if method == "HEAD":
            await self.workers.run(lambda: self.store.list_objects(bucket, max_keys=1))
            return Response(200, {"x-amz-bucket-region": self.region})
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

    async def _list_buckets(self, query: dict[str, str], owner: str | None = None) -> Response:
        """ListBuckets, by name after ``continuation-token`` (the last name of the page
        before), at most ``max-buckets`` (1..10000) under ``prefix``; only the buckets
        ``owner`` owns unless it is ``None`` (an admin, or no owners kept)."""
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
        if owner is not None:
            owned = await self.workers.run(self._owned_by, owner, [b.name for b in buckets])
            buckets = [b for b in buckets if b.name in owned]
        page = buckets[: int(max_text)]
        token = page[-1].name if len(buckets) > len(page) else None
        return xml_response(list_buckets_result(page, prefix, token))

    def _owned_by(self, owner: str, names: list[str]) -> set[str]:
        access = getattr(self.store, "bucket_access", None)
        if access is None:
            return set(names)
        return {name for name in names if (access(name) or ("", ""))[0] == owner}

    async def _delete_objects(self, bucket: str, payload: bytes) -> Response:
        keys, quiet = parse_delete_request(payload)
        versioned = isinstance(self.store, LocalBlobStore)
        if not versioned and any(asked not in (None, "null") for _, asked in keys):
            raise S3RequestError("NotImplemented", "this store keeps no versions", 501)

        def delete_one(key: str, asked: str | None) -> DeleteOutcome:
            if isinstance(self.store, LocalBlobStore):
                return self.store.delete_version(bucket, key, asked)
            self.store.delete_object(bucket, key)
            return DeleteOutcome("", False)

        def delete_all() -> tuple[
            list[tuple[str, str | None, str, bool]], list[tuple[str, str, str]]
        ]:
            self.store.list_objects(bucket, max_keys=1)  # NoSuchBucket before anything
            deleted: list[tuple[str, str | None, str, bool]] = []
            errors: list[tuple[str, str, str]] = []
            for key, asked in keys:
                try:
                    outcome = delete_one(key, asked)
                except BlocksError as error:
                    errors.append((key, map_error(error)[1], str(error)))
                    continue
                deleted.append((key, asked, outcome.version_id, outcome.delete_marker))
            return deleted, errors

        deleted, errors = await self.workers.run(delete_all)
        return xml_response(delete_result([] if quiet else deleted, errors))

    async def _list_versions(self, bucket: str, query: dict[str, str]) -> Response:
        """ListObjectVersions: every version and delete marker, by key then newest first."""
        allowed = {"versions", "prefix", "delimiter", "key-marker", "version-id-marker"}
        names = subresources(query) - allowed - {"max-keys", "encoding-type"}
        if names:
            raise not_implemented(names)
        store = versioned_store(self.store)
        max_keys, prefix, delimiter = _page_args(query)
        key_marker = query.get("key-marker", "")
        version_id_marker = query.get("version-id-marker", "") if key_marker else ""
        start = key_marker if version_id_marker else _after_marker(key_marker, delimiter)
        page = await self.workers.run(
            lambda: store.list_object_versions(
                bucket,
                prefix=prefix,
                delimiter=delimiter,
                max_keys=max_keys,
                key_marker=start,
                version_id_marker=version_id_marker,
            )
        )
        document = list_versions_result(
            bucket,
            page,
            prefix=prefix,
            delimiter=delimiter,
            key_marker=key_marker,
            version_id_marker=version_id_marker,
            max_keys=max_keys,
            url_encode=query.get("encoding-type") == "url",
        )
        return xml_response(document)

    async def _list_page(
        self,
        bucket: str,
        prefix: str,
        delimiter: str,
        max_keys: int,
        start_after: str,
        token: str | None = None,
    ) -> ListPage:
        """One page of ListObjects (v1 or v2), read on a worker thread."""
        return await self.workers.run(
            lambda: self.store.list_objects(
                bucket,
                prefix=prefix,
                delimiter=delimiter,
                max_keys=max_keys,
                start_after=start_after,
                continuation_token=token or None,
            )
        )

    async def _list_v1(self, bucket: str, query: dict[str, str]) -> Response:
        max_keys, prefix, delimiter = _page_args(query)
        marker = query.get("marker", "")
        start_after = _after_marker(marker, delimiter)
        page = await self._list_page(bucket, prefix, delimiter, max_keys, start_after)
        document = list_objects_v1_result(
            bucket,
            page,
            prefix=prefix,
            delimiter=delimiter,
            marker=marker,
            max_keys=max_keys,
            url_encode=query.get("encoding-type") == "url",
        )
        return xml_response(document)

    async def _list_v2(self, bucket: str, query: dict[str, str]) -> Response:
        max_keys, prefix, delimiter = _page_args(query)
        start_after, token = query.get("start-after", ""), query.get("continuation-token")
        page = await self._list_page(bucket, prefix, delimiter, max_keys, start_after, token)
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


def _page_args(query: dict[str, str]) -> tuple[int, str, str]:
    """A listing's ``max-keys`` (at most 1000), ``prefix`` and ``delimiter``."""
    max_keys_text = query.get("max-keys", "1000")
    if not max_keys_text.isdigit():
        raise S3RequestError("InvalidArgument", "max-keys must be a non-negative integer")
    return min(int(max_keys_text), 1000), query.get("prefix", ""), query.get("delimiter", "")


def _after_marker(marker: str, delimiter: str) -> str:
    """Where a page after ``marker`` starts (ListObjects v1 ``marker``, ListObjectVersions
    ``key-marker``): a marker that is a common prefix stands for everything under it, so the
    next page does not list that prefix again."""
    return marker + "\U0010ffff" if delimiter and marker.endswith(delimiter) else marker


def versioned_store(store: BlobStore) -> LocalBlobStore:
    """``store`` if it keeps versions, else S3's NotImplemented."""
    if not isinstance(store, LocalBlobStore):
        raise S3RequestError("NotImplemented", "this store keeps no versions", 501)
    return store


_CONFLICT_CODES: tuple[tuple[type[Conflict], str], ...] = (
    (BucketExists, "BucketAlreadyOwnedByYou"),
    (BucketNotEmpty, "BucketNotEmpty"),
    (BucketBusy, "OperationAborted"),
    (WriteConflict, "ConditionalRequestConflict"),
)


def map_error(error: BlocksError) -> tuple[int, str]:
    """The HTTP status and S3 error code for one of our errors."""
    text = str(error)
    if isinstance(error, ConditionFailed):
        return 412, "PreconditionFailed"
    if isinstance(error, DeleteMarkerFound):
        return (405, "MethodNotAllowed") if error.named else (404, "NoSuchKey")
    if isinstance(error, NotFound):
        if text.startswith("no such bucket"):
            return 404, "NoSuchBucket"
        if text.startswith("no such version"):
            return 404, "NoSuchVersion"
        return (404, "NoSuchUpload") if text.startswith("no such upload") else (404, "NoSuchKey")
    if isinstance(error, Conflict):  # by what conflicted (``blob.errors``), not by its text
        for kind, code in _CONFLICT_CODES:
            if isinstance(error, kind):
                return 409, code
        return 409, "OperationAborted"  # another change of the same thing: retry
    if isinstance(error, InvalidArgument):
        if text.startswith("invalid version id"):
            return 400, "InvalidArgument"
        for marker, code in (
            ("bucket name", "InvalidBucketName"),
            ("(InvalidRequest)", "InvalidRequest"),
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
