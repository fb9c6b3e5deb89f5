"""Reference counts over deduplicated chunks: who holds a chunk, and when it may go.

Theory of operation. A chunk is stored once and counted once per reference: each place it
appears in a committed manifest or an uploaded part, plus each *pin* held by an operation in
flight (an upload that has written the chunk but not yet committed its manifest, a streaming
read). The counts live in memory only; at open they are rebuilt from the manifests and parts
on disk, and any stored chunk with no reference (left by a crash between writing chunks and
committing a manifest) is deleted from the nodes this store alone writes, once its files are
older than a grace period (``collect_orphans``).

``acquire`` pins a chunk and writes it only if nobody holds it already: that is the
deduplication. Two uploads racing on the same new chunk do not both write it: the second
waits for the first's write to finish (or fail, and then writes it itself). A fresh chunk's
shards reach the disk in the background; ``make_durable`` is what a commit calls to wait for
the chunks it references, whoever wrote them (a deduplicated chunk may still be in flight
from another upload).

``release`` drops references; a chunk whose count reaches zero is marked busy under the lock
and its files are removed by a background thread (unlinking a few MiB of shards takes
milliseconds that a PUT replacing an object should not wait for). An ``acquire`` of a busy
chunk waits for the removal to finish and then writes it afresh, so a chunk being removed is
never counted as held; ``wait_for_deletes`` lets tests and ``close`` see the quiet state.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from blocks.blob.storage.chunks import ChunkStore
from blocks.blob.storage.durable import Flush
from blocks.blob.storage.erasure import chunk_id_of
from blocks.blob.storage.meta import ChunkRef
from blocks.core.errors import Unavailable

__all__ = ["ChunkLedger", "PinnedReader"]

_DELETERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="blob-gc")


class ChunkLedger:
    """Reference-counted access to a ``ChunkStore``. Thread-safe."""

    def __init__(self, chunks: ChunkStore) -> None:
        self.chunks = chunks
        self._counts: Counter[str] = Counter()
        self._writing: dict[str, threading.Event] = {}
        """Chunks being written or removed right now; others wait on the event."""
        self._flushes: dict[str, Flush] = {}
        """Chunks written but maybe not durable yet (dropped once a commit saw them done)."""
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._deleting = 0
        self.delete_unreferenced = True
        """Off in a cluster with replicated metadata: a chunk whose count here reaches zero
        stays, since another node may reference it; only ``gc`` deletes it (see replica)."""
        self.chunks_written = 0
        self.chunks_deduplicated = 0

    def count(self, chunk_id: str) -> int:
        with self._lock:
            return self._counts[chunk_id]

    def referenced(self) -> list[str]:
        """Every chunk id with at least one reference, sorted."""
        with self._lock:
            return sorted(self._counts)

    def adopt(self, refs: Iterable[ChunkRef]) -> None:
        """Count references found on disk at open (no write, no pin semantics)."""
        with self._lock:
            for ref in refs:
                self._counts[ref.chunk_id] += 1

    def acquire(self, chunk: bytes) -> ChunkRef:
        """Pin ``chunk``, writing it if no one holds it; the caller owns one reference. The
        chunk may not be durable yet: commit only after ``make_durable``."""
        chunk_id = chunk_id_of(chunk)
        while True:
            with self._lock:
                pending = self._writing.get(chunk_id)
                if pending is None:
                    held = self._counts[chunk_id]
                    self._counts[chunk_id] = held + 1
                    if held > 0:
                        self.chunks_deduplicated += 1
                        return ChunkRef(chunk_id, len(chunk))
                    pending = threading.Event()
                    self._writing[chunk_id] = pending
                    break
            pending.wait()
        try:
            _, flush = self.chunks.write_deferred(chunk, chunk_id)
            self.chunks_written += 1
            if not flush.done():
                with self._lock:
                    self._flushes[chunk_id] = flush
        except BaseException:
            with self._lock:
                self._drop_locked([chunk_id])
            raise
        finally:
            with self._lock:
                del self._writing[chunk_id]
            pending.set()
        return ChunkRef(chunk_id, len(chunk))

    def make_durable(self, refs: Iterable[ChunkRef]) -> None:
        """Return once every chunk in ``refs`` (held by the caller) is on disk; raises the
        error of a flush that failed (the chunk cannot be trusted then)."""
        with self._lock:
            pending = [(ref.chunk_id, self._flushes.get(ref.chunk_id)) for ref in refs]
        for chunk_id, flush in pending:
            if flush is None:
                continue
            flush.wait()
            with self._lock:
                if self._flushes.get(chunk_id) is flush:
                    del self._flushes[chunk_id]

    def pin(self, refs: Iterable[ChunkRef]) -> None:
        """Add one reference to chunks already held by someone (a reader's pin)."""
        with self._lock:
            for ref in refs:
                assert self._counts[ref.chunk_id] > 0, "pinning a chunk nobody holds"
                self._counts[ref.chunk_id] += 1

    def release(self, refs: Iterable[ChunkRef]) -> int:
        """Drop one reference per item; delete chunks nobody holds now. Returns deletions."""
        with self._lock:
            return self._drop_locked([ref.chunk_id for ref in refs])

    def _drop_locked(self, chunk_ids: list[str]) -> int:
        deleted = 0
        for chunk_id in chunk_ids:
            held = self._counts[chunk_id]
            assert held > 0, f"releasing chunk {chunk_id[:12]} that nobody holds"
            if held > 1:
                self._counts[chunk_id] = held - 1
                continue
            del self._counts[chunk_id]
            self._flushes.pop(chunk_id, None)
            if not self.delete_unreferenced:
                continue
            # Mark it busy now, remove it in the background (see the module docstring).
            # An acquire of it waits; a failing write (in _writing already) deletes inline.
            if chunk_id in self._writing:
                self.chunks.delete(chunk_id)
            else:
                self._writing[chunk_id] = threading.Event()
                self._deleting += 1
                _DELETERS.submit(self._delete, chunk_id)
            deleted += 1
        return deleted

    def _delete(self, chunk_id: str) -> None:
        try:
            self.chunks.delete(chunk_id)
        finally:
            with self._lock:
                self._writing.pop(chunk_id).set()
                self._deleting -= 1
                self._idle.notify_all()

    def wait_for_deletes(self, timeout_s: float = 30.0) -> bool:
        """Block until no background removal is pending; False on timeout."""
        with self._lock:
            return self._idle.wait_for(lambda: self._deleting == 0, timeout_s)

    def delete_if_unreferenced(self, chunk_id: str, delete: Callable[[str], object]) -> bool:
        """Call ``delete(chunk_id)`` under the ledger's lock if nobody here holds, writes or
        removes the chunk (the cluster collector's last step); returns whether it did."""
        with self._lock:
            if self._counts[chunk_id] > 0 or chunk_id in self._writing:
                return False
            self._counts.pop(chunk_id, None)
            delete(chunk_id)
            return True

    def collect_orphans(self, cutoff_ms: int) -> int:
        """Delete chunks that nobody references from the nodes this store owns alone, if
        every shard file of the chunk there was written before ``cutoff_ms`` (crash
        leftovers, missed deletes). Shards on peers are never touched: another writer's
        metadata may name them (see docs/blob.md, "Garbage collection"). Returns how many
        (node, chunk) pairs were deleted."""
        candidates = self.chunks.orphan_candidates(cutoff_ms)
        collected = 0
        with self._lock:
            for node, chunk_ids in candidates.items():
                for chunk_id in chunk_ids:
                    if self._counts[chunk_id] == 0 and chunk_id not in self._writing:
                        del self._counts[chunk_id]  # Counter lookups insert nothing; be tidy
                        try:
                            self.chunks.delete_from(node, chunk_id)
                        except (Unavailable, OSError):
                            continue
                        collected += 1
        return collected


class PinnedReader(Iterator[bytes | memoryview]):
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
