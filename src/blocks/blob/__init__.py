"""An erasure-coded, deduplicating blob store with an S3-compatible HTTP API.

Start with ``LocalBlobStore(directory)``: one node on a data directory, Reed-Solomon 4+2 over
content-addressed chunks. ``blocks blob serve`` puts the S3 API in front of it; see
docs/blob.md for the design and the measured numbers.
"""

from blocks.blob.api import BlobStore, BucketInfo, ListPage, ObjectInfo, PartInfo, ScrubReport
from blocks.blob.chunks import ChunkStore
from blocks.blob.erasure import ErasureCodec, ReedSolomonCodec, ReplicationCodec, codec_from_spec
from blocks.blob.shards import DirectoryShardStore, MemoryShardStore, ShardStore
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
]
