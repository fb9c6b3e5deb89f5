"""The blob block's ``Conflict``s, one class for each thing that can conflict.

Theory of operation. A change refused because of another change or of what exists names
*what* conflicted by its class, never by its message: the S3 front chooses its error code
from the class (``s3.buckets.map_error``), and the S3 adapter turns the codes it receives
back into these classes (``adapters.s3_errors``). Every one is a ``Conflict``, so a caller
that catches ``Conflict`` keeps working. Unconditional writes of one key never conflict:
the last one wins (``replica`` orders them in a cluster).
"""

from __future__ import annotations

from blocks.core.errors import Conflict

__all__ = ["BucketBusy", "BucketExists", "BucketNotEmpty", "WriteConflict"]


class BucketExists(Conflict):
    """CreateBucket of a bucket that exists (S3 409 ``BucketAlreadyOwnedByYou``)."""


class BucketNotEmpty(Conflict):
    """DeleteBucket of a bucket that holds objects, versions, uploads or changes in flight
    (S3 409 ``BucketNotEmpty``)."""


class BucketBusy(Conflict):
    """A change of a bucket's settings that meets another one of the same bucket in flight
    (S3 409 ``OperationAborted``: retry)."""


class WriteConflict(Conflict):
    """A conditional write (``If-Match``, ``If-None-Match``) that meets another write of its
    key in flight: its condition cannot be judged until that one's outcome is known (S3 409
    ``ConditionalRequestConflict``: retry)."""
