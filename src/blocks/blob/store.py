"""``LocalBlobStore``: buckets and objects over erasure-coded, deduplicated chunks.

Theory of operation. A put streams its bytes through the chunk pipeline
(``pipeline.store_stream``); every chunk is pinned and, if new, written as shards
(``ledger.ChunkLedger``). Only when every chunk is stored *and flushed* is the manifest
renamed into place (``meta.MetadataFiles``); that rename is the commit point. The manifest's
temporary file is flushed while the shards are, so a small durable PUT costs two rounds of
fsyncs: shards and manifest together, then the directory of the rename, which concurrent
PUTs share. A crash before the rename leaves chunks that no manifest references, which the
next open deletes; a crash after it leaves the complete object. The previous object's chunks
are released after the commit, and chunks nobody references any more are deleted (in the
background).

The directory fsync runs outside the index lock, so commits do not queue behind each other's
fsyncs; the index is updated after it, so a reader never sees an object a crash could still
take away. Two commits of one key are ordered by their renames: each takes a sequence number
when it renames, and only the latest rename may install itself in the index (a commit that a
later rename or a delete overtook releases its chunks: the later operation won, as it did on
disk).

The in-memory index (buckets, a dict and a sorted key list per bucket, open uploads) is
rebuilt from the metadata files at open and serves HEAD, GET's manifest lookup and listings.
One lock guards it; chunk I/O (the slow part) runs outside it, so puts and gets of different
objects proceed in parallel threads.

Shards go to ``nodes``: by default one ``DirectoryShardStore`` under ``directory/shards``; a
cluster passes several (local directories standing for disks, or remote peers), and the hash
ring puts each chunk's shards on distinct ones. Without a directory the store keeps metadata
in memory only (for tests and notebooks).
"""

from __future__ import annotations

import bisect
import itertools
import random
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from blocks.blob.api import BucketInfo, ListPage, ObjectInfo, ScrubReport
from blocks.blob.chunks import ChunkStore
from blocks.blob.erasure import ErasureCodec, codec_from_spec
from blocks.blob.ledger import ChunkLedger
from blocks.blob.listing import (
    check_bucket_name,
    check_key,
    check_metadata,
    list_keys,
    resolve_range,
)
from blocks.blob.meta import ChunkRef, Manifest, MetadataFiles
from blocks.blob.multipart import MultipartMixin
from blocks.blob.pipeline import split_chunks, store_stream
from blocks.blob.shards import DirectoryShardStore, MemoryShardStore, ShardStore
from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import Conflict, FailedPrecondition, InvalidArgument, NotFound

__all__ = ["DEFAULT_CHUNK_BYTES", "LocalBlobStore", "split_chunks"]

DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
OBJECT_BYTES_MAX = 5 * 1024**3
CHUNK_BYTES_MAX = 64 * 1024 * 1024


def _info(manifest: Manifest) -> ObjectInfo:
    return ObjectInfo(
        bucket=manifest.bucket,
        key=manifest.key,
        size=manifest.size,
        etag=manifest.etag,
        content_type=manifest.content_type,
        modified_ms=manifest.modified_ms,
        metadata=dict(manifest.metadata),
        parts_count=manifest.parts_count,
    )


class _PinnedReader(Iterator[bytes | memoryview]):
    """Yields an object's pieces and drops the read's chunk pins exactly once: when
    exhausted, on error, on ``close()`` or when garbage collected unread."""

    def __init__(self, pieces: Iterator[bytes | memoryview], release: Callable[[], object]) -> None:
        self._pieces = pieces
        self._release: Callable[[], object] | None = release

    def __next__(self) -> bytes | memoryview:
        try:
            return next(self._pieces)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def __del__(self) -> None:
        self.close()


class LocalBlobStore(MultipartMixin):
    """The embedded blob store (see the module docstring); implements ``BlobStore``."""

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        nodes: Mapping[str, ShardStore] | None = None,
        codec: ErasureCodec | str = "rs:4+2",
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        part_bytes_min: int = 5 * 1024 * 1024,
        object_bytes_max: int = OBJECT_BYTES_MAX,
        fsync: bool = True,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not 1 <= chunk_bytes <= CHUNK_BYTES_MAX:
            raise InvalidArgument(f"chunk_bytes must be in [1, {CHUNK_BYTES_MAX}]")
        self.codec = codec_from_spec(codec) if isinstance(codec, str) else codec
        self.chunk_bytes = chunk_bytes
        self.part_bytes_min = part_bytes_min
        self.object_bytes_max = object_bytes_max
        self.clock: Clock = clock or SystemClock()
        self.rng = rng or random.SystemRandom()
        self.directory = Path(directory) if directory is not None else None
        if nodes is None:
            if self.directory is None:
                nodes = {"memory": MemoryShardStore("memory")}
            else:
                root = self.directory / "shards" / "local"
                nodes = {"local": DirectoryShardStore(root, name="local", fsync=fsync)}
        for store in nodes.values():
            if isinstance(store, DirectoryShardStore):
                store.remove_temporaries()
        self.ledger = ChunkLedger(ChunkStore(nodes, self.codec))
        self.files = MetadataFiles(self.directory / "meta", fsync=fsync) if self.directory else None
        self._lock = threading.RLock()
        self._closed = False
        self._buckets: dict[str, int] = {}
        self._objects: dict[str, dict[str, Manifest]] = {}
        self._sorted: dict[str, list[str]] = {}
        self._commit_order = itertools.count(1)
        self._renamed: dict[tuple[str, str], int] = {}
        """Per key with a commit in flight: the sequence number of its latest rename."""
        self._init_multipart()
        self._load()

    @property
    def chunks(self) -> ChunkStore:
        return self.ledger.chunks

    def _load(self) -> None:
        if self.files is None:
            return
        for name, created_ms in self.files.load_buckets():
            self._buckets[name] = created_ms
            index = {m.key: m for m in self.files.load_manifests(name) if m.bucket == name}
            self._objects[name] = index
            self._sorted[name] = sorted(index)
            for manifest in index.values():
                self.ledger.adopt(manifest.chunks)
        self._load_uploads()
        self.ledger.collect_orphans()

    def _check_open(self) -> None:
        if self._closed:
            raise FailedPrecondition("the blob store is closed")

    def _bucket_index(self, bucket: str) -> dict[str, Manifest]:
        check_bucket_name(bucket)
        index = self._objects.get(bucket)
        if index is None:
            raise NotFound(f"no such bucket {bucket!r}")
        return index

    # -- buckets -----------------------------------------------------------------------------
    def create_bucket(self, name: str) -> BucketInfo:
        check_bucket_name(name)
        with self._lock:
            self._check_open()
            if name in self._buckets:
                raise Conflict(f"bucket {name!r} already exists")
            created_ms = self.clock.now_ms()
            if self.files is not None:
                self.files.put_bucket(name, created_ms)
            self._buckets[name] = created_ms
            self._objects[name] = {}
            self._sorted[name] = []
            return BucketInfo(name, created_ms)

    def delete_bucket(self, name: str) -> None:
        with self._lock:
            self._check_open()
            if self._bucket_index(name) or self._bucket_has_uploads(name):
                raise Conflict(f"bucket {name!r} is not empty")
            if self.files is not None:
                self.files.delete_bucket(name)
            del self._buckets[name], self._objects[name], self._sorted[name]

    def list_buckets(self) -> list[BucketInfo]:
        with self._lock:
            self._check_open()
            return [BucketInfo(name, self._buckets[name]) for name in sorted(self._buckets)]

    # -- objects -----------------------------------------------------------------------------
    def _store_stream(
        self, data: bytes | Iterable[bytes], size_max: int
    ) -> tuple[list[ChunkRef], int, bytes]:
        """Chunk and store ``data``; return (pinned refs, size, md5 digest). On failure every
        pin taken so far is released."""
        return store_stream(self.ledger, data, self.chunk_bytes, size_max, self._check_open)

    def _commit(self, manifest: Manifest, pinned: list[ChunkRef]) -> None:
        """Make ``manifest`` visible (its chunks are pinned by the caller), release the old
        (see the module docstring for the order of steps)."""
        name = (manifest.bucket, manifest.key)
        staged = self.files.stage_manifest(manifest) if self.files is not None else None
        try:
            self.ledger.make_durable(pinned)
            if staged is not None:
                staged.flush.wait()  # not under the lock: commits must not queue on fsyncs
            with self._lock:
                self._check_open()
                self._bucket_index(manifest.bucket)
                if staged is not None:
                    assert self.files is not None
                    self.files.publish(staged)
                    staged = None
                sequence = self._renamed[name] = next(self._commit_order)
            if self.files is not None:
                self.files.sync_directory(self.files.object_directory(manifest.bucket))
            with self._lock:
                if self._renamed.get(name) != sequence:  # overtaken: the later one won
                    self.ledger.release(pinned)
                    return
                del self._renamed[name]
                index = self._bucket_index(manifest.bucket)
                old = index.get(manifest.key)
                index[manifest.key] = manifest
                if old is None:
                    bisect.insort(self._sorted[manifest.bucket], manifest.key)
        except BaseException:
            if staged is not None:
                assert self.files is not None
                self.files.discard(staged)
            self.ledger.release(pinned)
            raise
        if old is not None:
            self.ledger.release(old.chunks)

    def put_object(
        self,
        bucket: str,
        key: str,
        data: bytes | Iterable[bytes],
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        check_key(key)
        user_metadata = check_metadata(metadata)
        with self._lock:
            self._check_open()
            self._bucket_index(bucket)
        refs, size, digest = self._store_stream(data, self.object_bytes_max)
        manifest = Manifest(
            bucket=bucket,
            key=key,
            size=size,
            etag=digest.hex(),
            content_type=content_type or "application/octet-stream",
            modified_ms=self.clock.now_ms(),
            chunks=tuple(refs),
            metadata=user_metadata,
        )
        self._commit(manifest, refs)
        return _info(manifest)

    def _manifest(self, bucket: str, key: str) -> Manifest:
        check_key(key)
        with self._lock:
            self._check_open()
            manifest = self._bucket_index(bucket).get(key)
        if manifest is None:
            raise NotFound(f"no such key {key!r} in bucket {bucket!r}")
        return manifest

    def head_object(self, bucket: str, key: str) -> ObjectInfo:
        return _info(self._manifest(bucket, key))

    def iter_object(
        self, bucket: str, key: str, byte_range: tuple[int, int] | None = None
    ) -> tuple[ObjectInfo, Iterator[bytes | memoryview]]:
        with self._lock:
            manifest = self._manifest(bucket, key)
            start, stop = resolve_range(byte_range, manifest.size)
            self.ledger.pin(manifest.chunks)  # deletes during the read keep the chunks alive
        pieces = self._read_span(manifest, start, stop)
        return _info(manifest), _PinnedReader(pieces, lambda: self.ledger.release(manifest.chunks))

    def _read_span(self, manifest: Manifest, start: int, stop: int) -> Iterator[memoryview]:
        offset = 0
        for ref in manifest.chunks:
            chunk_start, offset = offset, offset + ref.size
            if offset <= start or chunk_start >= stop:
                continue
            self._check_open()
            first, last = max(0, start - chunk_start), min(ref.size, stop - chunk_start)
            position = 0
            for view in self.chunks.read_views(ref.chunk_id):
                piece_start, position = position, position + len(view)
                if position > first and piece_start < last:
                    yield view[max(0, first - piece_start) : last - piece_start]
            assert position == ref.size, "chunk size differs from the manifest"

    def get_object(
        self, bucket: str, key: str, byte_range: tuple[int, int] | None = None
    ) -> tuple[ObjectInfo, bytes]:
        info, pieces = self.iter_object(bucket, key, byte_range)
        return info, b"".join(pieces)

    def delete_object(self, bucket: str, key: str) -> bool:
        check_key(key)
        with self._lock:
            self._check_open()
            index = self._bucket_index(bucket)
            self._renamed.pop((bucket, key), None)  # a commit in flight for the key lost
            manifest = index.pop(key, None)
            if manifest is None:
                return False
            if self.files is not None:
                try:
                    self.files.delete_manifest(bucket, key)
                except BaseException:
                    index[key] = manifest
                    raise
            keys = self._sorted[bucket]
            del keys[bisect.bisect_left(keys, key)]
        self.ledger.release(manifest.chunks)
        return True

    def list_objects(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str = "",
        max_keys: int = 1000,
        start_after: str = "",
        continuation_token: str | None = None,
    ) -> ListPage:
        if not isinstance(prefix, str) or not isinstance(delimiter, str):
            raise InvalidArgument("prefix and delimiter must be str")
        with self._lock:
            self._check_open()
            index = self._bucket_index(bucket)
            listing = list_keys(
                self._sorted[bucket],
                prefix=prefix,
                delimiter=delimiter,
                max_keys=max_keys,
                start_after=start_after,
                continuation_token=continuation_token,
            )
            objects = tuple(_info(index[key]) for key in listing.keys)
        return ListPage(objects, listing.common_prefixes, listing.is_truncated, listing.next_token)

    # -- maintenance -------------------------------------------------------------------------
    def scrub(self) -> ScrubReport:
        """Verify every referenced chunk (all shards, parity included), rewrite bad shards,
        then delete chunks nobody references."""
        checked = repaired = lost = 0
        for chunk_id in self.ledger.referenced():
            self._check_open()
            result = self.chunks.verify(chunk_id)
            checked += 1
            repaired += result.repaired
            lost += result.lost
        collected = self.ledger.collect_orphans()
        return ScrubReport(checked, repaired, lost, collected)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.ledger.wait_for_deletes()

    def __enter__(self) -> LocalBlobStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
