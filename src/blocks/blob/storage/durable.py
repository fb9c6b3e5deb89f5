"""Getting shard bytes onto the disk cheaply: background flushes, one wait at the commit.

Theory of operation. Durability costs fsyncs, and on a journaling file system an fsync is a
few milliseconds mostly spent waiting for a journal commit. Two habits keep that off the
critical path without weakening any promise:

* **Flush in the background, wait at the commit point.** A writer hands the descriptors it
  wrote to ``flush_descriptors``, which fsyncs them on a small thread pool and returns a
  ``Flush``; the writer goes on encoding and writing the next chunk, and only the commit (the
  manifest record) waits for every ``Flush`` it depends on. Concurrent fsyncs also share
  journal commits, so a chunk's six shard files cost about one fsync, not six.
* **Bounded.** The pool has ``FLUSH_THREADS`` workers (many, since they only wait on the
  disk, and the more fsyncs wait together the more share one journal commit); callers bound
  what they submit (the chunk pipeline keeps a fixed number of chunks in flight).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from blocks.core.files import fsync_directory  # re-exported: it was defined here

__all__ = ["FLUSH_THREADS", "Flush", "flush_descriptors", "fsync_directory"]

FLUSH_THREADS = 32
_POOL = ThreadPoolExecutor(max_workers=FLUSH_THREADS, thread_name_prefix="blob-flush")


class Flush:
    """Writes on their way to the disk; ``wait()`` returns once all are durable and raises
    the first error any of them met. Waiting again is cheap and raises the same error."""

    __slots__ = ("_futures",)

    def __init__(self, futures: Iterable[Future[None]] = ()) -> None:
        self._futures = list(futures)

    def wait(self) -> None:
        for future in self._futures:
            future.result()

    def done(self) -> bool:
        return all(future.done() for future in self._futures)

    def __add__(self, other: Flush) -> Flush:
        return Flush(self._futures + other._futures)


def _fsync_and_close(descriptor: int) -> None:
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def flush_descriptors(descriptors: Iterable[int], directories: Iterable[Path] = ()) -> Flush:
    """fsync and close each open descriptor, and fsync each directory, concurrently in the
    background. The descriptors belong to the flush from now on (closed even on error)."""
    futures = [_POOL.submit(_fsync_and_close, descriptor) for descriptor in descriptors]
    futures += [_POOL.submit(fsync_directory, directory) for directory in directories]
    return Flush(futures)
