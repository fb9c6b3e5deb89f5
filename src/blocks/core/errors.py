"""One exception hierarchy for every block, and its mapping to gRPC status codes.

Theory of operation: everything the library raises on purpose derives from ``BlocksError``.
Two families matter to a caller deciding what to do next:

* errors about the *request* (``InvalidArgument``, ``NotFound``, ``Conflict``,
  ``Unauthenticated``, ``PermissionDenied``): retrying the same request will not help;
* errors about the *system right now* (``Unavailable``, ``Timeout``, ``Overloaded``):
  retrying later may help, and ``Overloaded`` says when.

A misbehaving peer (``PeerError``: malformed frames, protocol violations) is a different class
from our own misuse of an API (``InvalidArgument``), so logs tell the two apart. ``Corruption``
means stored bytes failed a checksum: never retried, never returned as data.

``to_grpc_status`` and ``from_grpc_status`` map both ways so that a client sees the same
exception class that the server raised, with ``retry_after_ms`` carried in trailing metadata
(and the name of a class that refines its code's class, such as ``StorageFull``).
"""

from __future__ import annotations

import errno
from typing import Any, ClassVar

import grpc

__all__ = [
    "AlreadyExists",
    "BlocksError",
    "Cancelled",
    "Conflict",
    "Corruption",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "Overloaded",
    "PeerError",
    "PermissionDenied",
    "StorageError",
    "StorageFull",
    "Timeout",
    "Unauthenticated",
    "Unavailable",
    "error_from_status",
    "grpc_status_of",
    "storage_error",
]


class BlocksError(Exception):
    """Base of every error the library raises on purpose."""

    grpc_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN
    retryable: ClassVar[bool] = False

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message or type(self).__name__


class InvalidArgument(BlocksError, ValueError):
    """The caller passed something the operation cannot accept; nothing was changed."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(BlocksError, KeyError):
    """The named thing (key, topic, bucket, node, ...) does not exist."""

    grpc_code = grpc.StatusCode.NOT_FOUND

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.message or type(self).__name__


class AlreadyExists(BlocksError):
    """The thing being created exists already."""

    grpc_code = grpc.StatusCode.ALREADY_EXISTS


class Conflict(BlocksError):
    """A concurrent change won: a version or precondition did not match."""

    grpc_code = grpc.StatusCode.ABORTED


class FailedPrecondition(BlocksError):
    """The system is not in a state that allows the operation (closed store, wrong role)."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(BlocksError):
    """Not enough healthy nodes (or a peer is down) to serve the request now."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
    retryable = True


class Timeout(BlocksError, TimeoutError):
    """The operation did not finish before its deadline; it may or may not have taken effect."""

    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    retryable = True


class Overloaded(BlocksError):
    """Admission control refused the request; retry after ``retry_after_ms``."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    retryable = True

    def __init__(self, message: str = "", retry_after_ms: int = 0, **details: Any) -> None:
        if retry_after_ms < 0:
            raise ValueError("retry_after_ms must be >= 0")
        super().__init__(message, **details)
        self.retry_after_ms = retry_after_ms


class StorageError(Unavailable):
    """The node's disk refused a write or an fsync (an I/O error). The request was not
    acknowledged (after a failed fsync its bytes may or may not be on disk); what the node
    acknowledged before is unharmed. Retry later or elsewhere; the operator must look at
    the disk."""


class StorageFull(StorageError, Overloaded):
    """The node's disk is full (``ENOSPC``/``EDQUOT``): writes are refused until space
    returns; reads go on. It is both a ``StorageError`` and an ``Overloaded`` (gRPC
    ``RESOURCE_EXHAUSTED``; its name travels in trailing metadata, ``REFINED_CLASSES``)."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def storage_error(error: OSError, doing: str) -> StorageError:
    """The typed error for an ``OSError`` the disk raised while ``doing`` (e.g. "write"):
    ``StorageFull`` for ``ENOSPC``/``EDQUOT``, ``StorageError`` for anything else."""
    reason = error.strerror or type(error).__name__
    if error.errno in _FULL_ERRNOS:
        return StorageFull(f"storage full: {doing} failed: {reason}")
    return StorageError(f"storage failed: {doing} failed: {reason}")


class Corruption(BlocksError):
    """Stored or received bytes failed a checksum; they are never returned as data."""

    grpc_code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(BlocksError):
    """Missing or wrong credentials."""

    grpc_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(BlocksError):
    """Valid credentials that do not allow this operation."""

    grpc_code = grpc.StatusCode.PERMISSION_DENIED


class Cancelled(BlocksError):
    """The caller or the server cancelled the operation."""

    grpc_code = grpc.StatusCode.CANCELLED


class PeerError(BlocksError):
    """A peer broke the protocol (malformed frame, unexpected message): its fault, not ours.

    Sent over gRPC it reads as ``Internal`` to the client, which is not the peer at fault.
    """

    grpc_code = grpc.StatusCode.INTERNAL


class Internal(BlocksError):
    """The server failed in a way it did not expect (a bug); details stay in its logs."""

    grpc_code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[BlocksError]] = {
    cls.grpc_code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        Conflict,
        FailedPrecondition,
        Unavailable,
        Timeout,
        Overloaded,
        Corruption,
        Unauthenticated,
        PermissionDenied,
        Cancelled,
        Internal,
    )
}

RETRY_AFTER_METADATA_KEY = "retry-after-ms"
ERROR_CLASS_METADATA_KEY = "blocks-error"
"""Trailing metadata naming a class that refines its code's class (``StorageFull`` refines
``Overloaded``), so a gRPC client rebuilds the exact class; other clients see the code's."""

REFINED_CLASSES: dict[str, type[BlocksError]] = {
    cls.__name__: cls for cls in (StorageError, StorageFull)
}
"""Classes that share a gRPC code with a broader class and travel by name in metadata."""


def grpc_status_of(
    error: BaseException,
) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """Return ``(code, details, trailing_metadata)`` for any exception raised in a handler.

    Errors outside the hierarchy map to ``INTERNAL`` with their type name only, so that a
    server never leaks a traceback to a client.
    """
    if isinstance(error, BlocksError):
        metadata: tuple[tuple[str, str], ...] = ()
        if isinstance(error, Overloaded):
            metadata = ((RETRY_AFTER_METADATA_KEY, str(error.retry_after_ms)),)
        refined = type(error).__name__
        if REFINED_CLASSES.get(refined) is type(error):
            metadata += ((ERROR_CLASS_METADATA_KEY, refined),)
        return error.grpc_code, str(error), metadata
    return grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}", ()


def error_from_status(code: grpc.StatusCode, details: str, metadata: Any = None) -> BlocksError:
    """Rebuild the library exception a server raised from a gRPC status (client side)."""
    cls = _BY_CODE.get(code, BlocksError)
    for key, value in metadata or ():
        refined = REFINED_CLASSES.get(value) if key == ERROR_CLASS_METADATA_KEY else None
        if refined is not None and refined.grpc_code == code:
            cls = refined
    if issubclass(cls, Overloaded):
        retry_after_ms = 0
        for key, value in metadata or ():
            if key == RETRY_AFTER_METADATA_KEY:
                try:
                    retry_after_ms = max(0, int(value))
                except ValueError:
                    retry_after_ms = 0
        return cls(details, retry_after_ms=retry_after_ms)
    return cls(details)
