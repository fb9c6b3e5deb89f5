"""An erasure-coded, deduplicating blob store with an S3-compatible HTTP API.

Start with ``LocalBlobStore(directory)``: one node on a data directory, Reed-Solomon 4+2 over
content-addressed chunks. ``blocks blob serve`` puts the S3 API in front of it; see
docs/blob.md for the design and the measured numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from blocks.blob.api import BlobStore, BucketInfo, ListPage, ObjectInfo, PartInfo, ScrubReport
from blocks.blob.storage.chunks import ChunkStore
from blocks.blob.storage.erasure import (
    ErasureCodec,
    ReedSolomonCodec,
    ReplicationCodec,
    codec_from_spec,
)
from blocks.blob.storage.shards import DirectoryShardStore, MemoryShardStore, ShardStore
from blocks.blob.store import LocalBlobStore

__all__ = [
    "BlobStore",
    "BucketInfo",
    "ChunkStore",
    "DirectoryShardStore",
    "ErasureCodec",
    "ListPage",
    "LocalBlobStore",
    "MemoryShardStore",
    "ObjectInfo",
    "PartInfo",
    "ReedSolomonCodec",
    "ReplicationCodec",
    "ScrubReport",
    "ShardStore",
    "codec_from_spec",
    "connect",
]


if TYPE_CHECKING:
    from blocks.blob.client import S3Client


def connect(
    endpoint: str = "http://127.0.0.1:9000",
    access_key: str = "",
    secret_key: str = "",
    *,
    timeout_s: float = 30.0,
) -> S3Client:
    """A small signed S3 client of the server at ``endpoint`` (``blocks blob serve``'s default).

    Any S3 client (boto3, the AWS CLI) works as well; this one needs no extra package.
    """
    from blocks.blob.client import S3Client

    return S3Client(endpoint, access_key, secret_key, timeout_s)
