"""botocore's exceptions as the blob block's errors (pure: a table and one function).

Theory of operation: an S3 store answers a refused request with an error code (``NoSuchKey``,
``BucketNotEmpty``...) and an HTTP status; botocore raises ``ClientError`` carrying both, and
its own exceptions for what never reached an answer (no connection, a read timeout, a request
it refused to send). ``blob_error`` turns any of them into a ``BlocksError``: the code first
(``CODES``), then the status class, then botocore's own kinds. A code nobody listed keeps its
text in the message, so the caller sees what the store said. ``S3BlobStore`` calls every
botocore function inside ``mapped()``, so no botocore exception reaches its callers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore import exceptions as boto_errors

from blocks.blob.conditions import ConditionFailed
from blocks.blob.errors import BucketBusy, BucketExists, BucketNotEmpty, WriteConflict
from blocks.core.errors import (
    BlocksError,
    Conflict,
    Corruption,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PeerError,
    PermissionDenied,
    Timeout,
    Unauthenticated,
    Unavailable,
)

__all__ = ["CODES", "blob_error", "mapped"]

CODES: dict[str, type[BlocksError]] = {
    # missing things (a HEAD has no body: its code is the bare status)
    "NoSuchBucket": NotFound,
    "NoSuchKey": NotFound,
    "NoSuchUpload": NotFound,
    "NotFound": NotFound,
    "404": NotFound,
    # names that exist, and buckets in use
    "BucketAlreadyOwnedByYou": BucketExists,
    "BucketAlreadyExists": Conflict,  # another account's: not ours to name
    "BucketNotEmpty": BucketNotEmpty,
    "ConditionalRequestConflict": WriteConflict,
    "OperationAborted": BucketBusy,
    # conditions
    "PreconditionFailed": ConditionFailed,
    "412": ConditionFailed,
    # bad input: nothing changed
    "InvalidArgument": InvalidArgument,
    "InvalidBucketName": InvalidArgument,
    "InvalidRange": InvalidArgument,
    "416": InvalidArgument,
    "InvalidPart": InvalidArgument,
    "InvalidPartOrder": InvalidArgument,
    "EntityTooSmall": InvalidArgument,
    "EntityTooLarge": InvalidArgument,
    "KeyTooLongError": InvalidArgument,
    "MetadataTooLarge": InvalidArgument,
    "MalformedXML": InvalidArgument,
    "InvalidRequest": InvalidArgument,
    "InvalidDigest": InvalidArgument,
    "BadDigest": InvalidArgument,
    "XAmzContentSHA256Mismatch": InvalidArgument,
    "InvalidStorageClass": InvalidArgument,
    "400": InvalidArgument,
    # who is asking
    "InvalidAccessKeyId": Unauthenticated,
    "SignatureDoesNotMatch": Unauthenticated,
    "AuthorizationHeaderMalformed": Unauthenticated,
    "AccessDenied": PermissionDenied,
    "403": PermissionDenied,
    # the store, not the request
    "SlowDown": Unavailable,
    "ServiceUnavailable": Unavailable,
    "InternalError": Unavailable,
    "RequestTimeout": Timeout,
    "NotImplemented": FailedPrecondition,
}


def _client_error(error: boto_errors.ClientError) -> BlocksError:
    details = error.response.get("Error", {})
    code = str(details.get("Code", ""))
    message = str(details.get("Message", "")) or code
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    kind = CODES.get(code)
    if kind is None:
        if status >= 500:
            kind = Unavailable
        elif status == 404:
            kind = NotFound
        else:
            kind = PeerError  # an answer this adapter does not know how to read
    return kind(f"S3 {code or status}: {message}", code=code, status=status)


def blob_error(error: Exception) -> BlocksError:
    """The ``BlocksError`` for an exception botocore raised (``assert``: only botocore's)."""
    if isinstance(error, BlocksError):
        return error
    if isinstance(error, boto_errors.ClientError):
        return _client_error(error)
    if isinstance(error, boto_errors.ParamValidationError):
        return InvalidArgument(f"S3 request refused before sending: {error}")
    if isinstance(error, boto_errors.ReadTimeoutError | boto_errors.ConnectTimeoutError):
        return Timeout(f"S3 store did not answer in time: {error}")
    if isinstance(
        error,
        boto_errors.EndpointConnectionError
        | boto_errors.ConnectionClosedError
        | boto_errors.ResponseStreamingError
        | boto_errors.HTTPClientError,
    ):
        return Unavailable(f"S3 store unreachable: {error}")
    if isinstance(error, boto_errors.NoCredentialsError | boto_errors.PartialCredentialsError):
        return Unauthenticated(f"no S3 credentials: {error}")
    if isinstance(error, boto_errors.FlexibleChecksumError):
        return Corruption(f"S3 store returned bytes that fail their checksum: {error}")
    assert isinstance(error, boto_errors.BotoCoreError), f"not a botocore error: {error!r}"
    return PeerError(f"S3 client error: {error}")


@contextmanager
def mapped() -> Iterator[None]:
    """Run a botocore call; its exceptions leave as the block's errors."""
    try:
        yield
    except (boto_errors.BotoCoreError, boto_errors.ClientError) as error:
        raise blob_error(error) from error
