"""``LocalBlobStore``: buckets and objects over erasure-coded, deduplicated chunks.

Theory of operation. Metadata lives in a journal (``journal``: the core segment log, group
committed) replayed into an in-memory index at open (``index.MetaIndex``); every change is
one record, committed as ``committing`` describes (submitted in order under the lock,
awaited outside it, applied to the index once durable unless a later change overtook it).

A PUT of at most ``inline_bytes_max`` bytes (64 KiB by default) is *inline*: its bytes and
its manifest are one journal record, so a durable small PUT costs one shared fsync and
creates no file, and a GET of it is one read of that record (checked by the log's
checksum), with no shard opened, or none at all while its bytes are kept in memory
(``inline_cache``: ``read_cached`` lets the event loop answer such a GET without a thread
trip). Damage to a kept object's record is then
found by scrub, not by the GET, which returns the bytes that were written. Inline objects are as durable as the metadata that names
them (one copy on the node that keeps the metadata, bit rot detected, not repaired); larger
objects are chunked and erasure-coded.

A larger PUT streams its bytes through the chunk pipeline (``pipeline.store_stream``); every
chunk is pinned and, if new, written as shards (``ledger.ChunkLedger``). Only when every
chunk is stored *and flushed* is the manifest's record submitted; its durability is the
commit point. A crash before it leaves chunks that no record references, which the next open
deletes; a crash after it leaves the complete object. The previous object's chunks are
released after the commit, and chunks nobody references any more are deleted (in the
background).

Shards go to ``nodes``: by default one ``DirectoryShardStore`` under ``directory/shards``; a
cluster passes several (local directories standing for disks, or remote peers), and the hash
ring puts each chunk's shards on distinct ones. Without a directory the journal is kept in
memory (for tests and notebooks).
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping
from concurrent.futures import Future
from pathlib import Path

from blocks.blob.api import ListPage, ObjectInfo, ScrubReport
from blocks.blob.conditions import WriteCondition, check_write
from blocks.blob.errors import WriteConflict
from blocks.blob.listing import (
    check_bucket_name,
    check_checksums,
    check_headers,
    check_key,
    check_metadata,
    list_keys,
    resolve_range,
)
from blocks.blob.storage.buckets import BucketMixin
from blocks.blob.storage.chunks import ChunkStore
from blocks.blob.storage.committing import CommitMixin
from blocks.blob.storage.erasure import ErasureCodec, codec_from_spec
from blocks.blob.storage.index import MetaIndex
from blocks.blob.storage.inline_cache import InlineCacheMixin
from blocks.blob.storage.journal import Journal, LogJournal, MemoryJournal
from blocks.blob.storage.ledger import ChunkLedger, PinnedReader
from blocks.blob.storage.meta import ChunkRef, Manifest
from blocks.blob.storage.multipart import MultipartMixin
from blocks.blob.storage.pipeline import split_chunks, store_stream, take_small
from blocks.blob.storage.records import ObjectPut, UploadComplete
from blocks.blob.storage.shards import DirectoryShardStore, MemoryShardStore, ShardStore
from blocks.blob.storage.versioned import VersionsMixin
from blocks.blob.storage.versions import object_entity
from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import FailedPrecondition, InvalidArgument, NotFound

__all__ = ["DEFAULT_CHUNK_BYTES", "DEFAULT_INLINE_BYTES", "LocalBlobStore", "split_chunks"]

DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
DEFAULT_INLINE_BYTES = 64 * 1024
INLINE_BYTES_MAX = 1024 * 1024
OBJECT_BYTES_MAX = 5 * 1024**3
CHUNK_BYTES_MAX = 64 * 1024 * 1024
COMPACT_BYTES_MIN = 64 * 1024 * 1024
ORPHAN_GRACE_S = 3600.0
"""An unreferenced chunk is collected only once its files are this old: a write in flight
that this process cannot see (a ``blocks blob scrub`` run beside a serving node) is never
mistaken for a leftover."""


class LocalBlobStore(InlineCacheMixin, CommitMixin, BucketMixin, VersionsMixin, MultipartMixin):
    """The embedded blob store (see the module docstring); implements ``BlobStore``."""

    node_id = ""
    """Stamped on manifests and deletes as their writer (a cluster's replica sets it)."""

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        nodes: Mapping[str, ShardStore] | None = None,
        codec: ErasureCodec | str = "rs:4+2",
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        inline_bytes_max: int = DEFAULT_INLINE_BYTES,
        part_bytes_min: int = 5 * 1024 * 1024,
        object_bytes_max: int = OBJECT_BYTES_MAX,
        compact_bytes_min: int = COMPACT_BYTES_MIN,
        fsync: bool = True,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        owned_nodes: Collection[str] | None = None,
        orphan_grace_s: float = ORPHAN_GRACE_S,
    ) -> None:
        """``owned_nodes`` names the nodes only this store writes to (default: all of
        them); orphans are collected from those alone, and only when older than
        ``orphan_grace_s``."""
        if not 1 <= chunk_bytes <= CHUNK_BYTES_MAX:
            raise InvalidArgument(f"chunk_bytes must be in [1, {CHUNK_BYTES_MAX}]")
        if not 0 <= inline_bytes_max <= INLINE_BYTES_MAX:
            raise InvalidArgument(f"inline_bytes_max must be in [0, {INLINE_BYTES_MAX}]")
        self.codec = codec_from_spec(codec) if isinstance(codec, str) else codec
        self.chunk_bytes = chunk_bytes
        self.inline_bytes_max = inline_bytes_max
        self.part_bytes_min = part_bytes_min
        self.object_bytes_max = object_bytes_max
        self.compact_bytes_min = compact_bytes_min
        self.clock: Clock = clock or SystemClock()
        self.rng = rng or random.SystemRandom()
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None and (self.directory / "meta" / "buckets").is_dir():
            raise FailedPrecondition(
                f"{self.directory} holds metadata files of an older layout; not opened"
            )
        if nodes is None:
            if self.directory is None:
                nodes = {"memory": MemoryShardStore("memory")}
            else:
                root = self.directory / "shards" / "local"
                nodes = {"local": DirectoryShardStore(root, name="local", fsync=fsync)}
        for store in nodes.values():
            if isinstance(store, DirectoryShardStore):
                store.remove_temporaries()
        if orphan_grace_s < 0:
            raise InvalidArgument("orphan_grace_s must be >= 0")
        self.orphan_grace_s = orphan_grace_s
        self.ledger = ChunkLedger(ChunkStore(nodes, self.codec, owned=owned_nodes))
        self.journal: Journal = (
            LogJournal(self.directory / "journal", fsync=fsync)
            if self.directory is not None
            else MemoryJournal()
        )
        self._lock = threading.RLock()
        self._closed = False
        self._init_inline_cache()
        self._last_version = 0
        self.index = MetaIndex()
        self._init_commits()
        self._init_multipart()
        self._load()

    @property
    def chunks(self) -> ChunkStore:
        return self.ledger.chunks

    def _check_open(self) -> None:
        if self._closed:
            raise FailedPrecondition("the blob store is closed")

    def _key_busy(self, bucket: str, key: str) -> bool:
        """Whether a change of any version of ``key`` is in flight (lock held)."""
        return any(
            isinstance(e, tuple) and e[0] == "object" and e[1:3] == (bucket, key)
            for e in self._latest
        )

    def _bucket_index(self, bucket: str) -> dict[str, Manifest]:
        check_bucket_name(bucket)
        index = self.index.objects.get(bucket)
        if index is None:
            raise NotFound(f"no such bucket {bucket!r}")
        return index

    # -- objects -----------------------------------------------------------------------------
    def _store_stream(
        self, data: bytes | Iterable[bytes], size_max: int
    ) -> tuple[list[ChunkRef], int, bytes]:
        """Chunk and store ``data``; return (pinned refs, size, md5 digest). On failure every
        pin taken so far is released."""
        return store_stream(self.ledger, data, self.chunk_bytes, size_max, self._check_open)

    def _commit_object(
        self,
        record: ObjectPut | UploadComplete,
        pinned: list[ChunkRef],
        upload_id: str | None = None,
        condition: WriteCondition | None = None,
    ) -> Manifest:
        """Commit ``record`` (its chunks pinned by the caller and durable): make the object
        visible unless a later change of the key overtook it, release what it replaced, and
        for a completion drop the upload. Returns the manifest as installed (as journaled:
        a replica may have moved its version past a newer one, ``_ordered``).
        ``WriteConflict`` for a conditional write that meets another write of its key in
        flight (the condition cannot be judged until that one's outcome is known)."""
        entity = object_entity(
            record.manifest.bucket, record.manifest.key, record.manifest.version_id
        )
        future: Future[int] | None = None
        try:
            with self._lock:
                self._check_open()
                bucket, key = record.manifest.bucket, record.manifest.key
                if condition is not None:  # no wait (the lock released) between check and submit
                    self._await_room()
                current = self._bucket_index(bucket).get(key)
                if condition is not None:
                    if self._key_busy(bucket, key):
                        raise WriteConflict(f"another write of key {key!r} is in flight; retry")
                    check_write(condition, current.etag if current is not None else None)
                record, sequence, future, size = self._submit_ordered(entity, record)
        except BaseException:
            self.ledger.release(pinned)
            raise
        manifest = record.manifest
        offset = self._durable(entity, sequence, future)  # failed: the pins stay (``committing``)
        inline = isinstance(record, ObjectPut) and record.body is not None
        installed = dataclasses.replace(
            manifest, inline_offset=offset if inline else -1, record_bytes=size
        )
        released: list[tuple[ChunkRef, ...]] = []
        with self._lock:
            if upload_id is not None:
                released += [part.chunks for part in self._close_upload(upload_id)]
            if self._finish(entity, sequence):
                old = self.index.put_object(installed)
                released.append(old.chunks if old is not None else ())
                if old is not None and old.inline and old.inline_offset != offset:
                    self._forget_one(old.inline_offset)  # the version it replaced is gone
                if inline:
                    assert isinstance(record, ObjectPut) and record.body is not None
                    self._cache_inline(offset, bytes(record.body))  # no copy of bytes
            else:  # overtaken: the later change won, as it does in the journal
                released.append(tuple(pinned))
            self._maybe_compact()
        for chunks in released:
            self.ledger.release(chunks)
        return installed

    def put_object(
        self,
        bucket: str,
        key: str,
        data: bytes | Iterable[bytes],
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
        condition: WriteCondition | None = None,
        checksums: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        check_key(key)
        stored_headers = check_headers(headers)
        user_metadata = check_metadata(metadata)
        with self._lock:
            self._check_open()
            current = self._bucket_index(bucket).get(key)
            check_write(condition, current.etag if current is not None else None)  # early
        body, data = take_small(data, self.inline_bytes_max)
        refs: list[ChunkRef] = []
        if body is not None:
            size, digest = len(body), hashlib.md5(body, usedforsecurity=False).digest()
        else:
            refs, size, digest = self._store_stream(data, self.object_bytes_max)
            try:
                self.ledger.make_durable(refs)
            except BaseException:
                self.ledger.release(refs)
                raise
        try:
            modified_ms, version_id = self._stamp(bucket, key)  # a replica may ask its peers
        except BaseException:
            self.ledger.release(refs)
            raise
        manifest = Manifest(
            bucket=bucket,
            key=key,
            size=size,
            etag=digest.hex(),
            content_type=content_type or "application/octet-stream",
            modified_ms=modified_ms,
            chunks=tuple(refs),
            metadata=user_metadata,
            checksums=check_checksums(checksums),
            headers=stored_headers,
            writer=self.node_id,
            version_id=version_id,
        )
        installed = self._commit_object(ObjectPut(manifest, body), refs, condition=condition)
        return self._info(installed)

    def head_object(self, bucket: str, key: str, version_id: str | None = None) -> ObjectInfo:
        """As ``BlobStore.head_object``; ``version_id`` names a version (``versioned``)."""
        return self._info(self._manifest(bucket, key, version_id))

    def iter_object(
        self,
        bucket: str,
        key: str,
        byte_range: tuple[int, int] | None = None,
        version_id: str | None = None,
    ) -> tuple[ObjectInfo, Iterator[bytes | memoryview]]:
        with self._lock:
            manifest = self._manifest(bucket, key, version_id)
            start, stop = resolve_range(byte_range, manifest.size)
            info = self._info(manifest)
            if manifest.inline:  # read under the lock: compaction moves records
                body = self._inline_bytes(manifest.inline_offset)
                return info, iter([body[start:stop]] if stop > start else [])
            self.ledger.pin(manifest.chunks)  # deletes during the read keep the chunks alive
        pieces = self._read_span(manifest, start, stop)
        return info, PinnedReader(pieces, lambda: self.ledger.release(manifest.chunks))

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
        self,
        bucket: str,
        key: str,
        byte_range: tuple[int, int] | None = None,
        version_id: str | None = None,
    ) -> tuple[ObjectInfo, bytes]:
        info, pieces = self.iter_object(bucket, key, byte_range, version_id)
        return info, b"".join(pieces)

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
                self.index.sorted_keys[bucket],
                prefix=prefix,
                delimiter=delimiter,
                max_keys=max_keys,
                start_after=start_after,
                continuation_token=continuation_token,
            )
            objects = tuple(self._info(index[key]) for key in listing.keys)
        return ListPage(objects, listing.common_prefixes, listing.is_truncated, listing.next_token)

    # -- maintenance -------------------------------------------------------------------------
    def scrub(self) -> ScrubReport:
        """Verify every referenced chunk (all shards, parity included) and every inline
        object, rewrite bad shards, then delete chunks nobody references from the nodes
        this store owns (older than the grace period)."""
        checked, lost = self._scrub_inline()
        repaired = 0
        for chunk_id in self.ledger.referenced():
            self._check_open()
            result = self.chunks.verify(chunk_id)
            checked += 1
            repaired += result.repaired
            lost += result.lost
        collected = self.ledger.collect_orphans(self._orphan_cutoff_ms())
        return ScrubReport(checked, repaired, lost, collected)

    def close(self) -> None:
        if not self._closed:
            self._close_commits()
        self.ledger.wait_for_deletes()

    def __enter__(self) -> LocalBlobStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
