"""Getting bytes onto the disk cheaply: background flushes and group-committed directories.

Theory of operation. Durability costs fsyncs, and on a journaling file system an fsync is a
few milliseconds mostly spent waiting for a journal commit. Three habits keep that off the
critical path without weakening any promise:

* **Flush in the background, wait at the commit point.** A writer hands the descriptors it
  wrote to ``flush_descriptors``, which fsyncs them on a small thread pool and returns a
  ``Flush``; the writer goes on encoding and writing the next chunk, and only the commit (the
  manifest rename) waits for every ``Flush`` it depends on. Concurrent fsyncs also share
  journal commits, so a chunk's six shard files cost about one fsync, not six.
* **Group commit for directories.** Making a rename durable needs an fsync of the directory.
  ``GroupSync.sync(directory)`` lets concurrent callers share one: a caller whose rename
  happened before a running sync started rides on it; one that came later waits for the next
  sync, which a single leader runs for everyone queued. Concurrent small PUTs into a bucket
  thus share one directory fsync instead of paying one each.
* **Bounded.** The pool has ``FLUSH_THREADS`` workers (many, since they only wait on the
  disk, and the more fsyncs wait together the more share one journal commit); callers bound
  what they submit (the chunk pipeline keeps a fixed number of chunks in flight).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

__all__ = ["FLUSH_THREADS", "Flush", "GroupSync", "flush_descriptors", "fsync_directory"]

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


def fsync_directory(directory: Path) -> None:
    """Make the names in ``directory`` (creations, renames, removals) durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    _fsync_and_close(descriptor)


def flush_descriptors(descriptors: Iterable[int], directories: Iterable[Path] = ()) -> Flush:
    """fsync and close each open descriptor, and fsync each directory, concurrently in the
    background. The descriptors belong to the flush from now on (closed even on error)."""
    futures = [_POOL.submit(_fsync_and_close, descriptor) for descriptor in descriptors]
    futures += [_POOL.submit(fsync_directory, directory) for directory in directories]
    return Flush(futures)


class GroupSync:
    """Coalesced directory fsyncs (see the module docstring). Thread-safe."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._requested: dict[Path, int] = {}
        """Per directory: how many callers asked so far (a ticket number)."""
        self._synced: dict[Path, int] = {}
        """Per directory: every ticket up to this one is durable."""
        self._running: set[Path] = set()
        self._waiting: dict[Path, int] = {}
        self.syncs = 0
        """fsyncs actually run (at most one per caller, fewer when callers overlap)."""

    def sync(self, directory: Path) -> None:
        """Return once every change made in ``directory`` before this call is durable."""
        with self._condition:
            ticket = self._requested.get(directory, 0) + 1
            self._requested[directory] = ticket
            self._waiting[directory] = self._waiting.get(directory, 0) + 1
            try:
                while self._synced.get(directory, 0) < ticket:
                    if directory in self._running:
                        self._condition.wait()
                    else:
                        self._lead(directory)
            finally:
                self._waiting[directory] -= 1
                if not self._waiting[directory]:  # forget idle directories: maps stay small
                    del self._waiting[directory], self._requested[directory]
                    self._synced.pop(directory, None)

    def _lead(self, directory: Path) -> None:
        """Run one fsync covering every ticket issued so far (condition held on entry and
        on exit; released during the fsync). An error goes to this caller only; the others
        wake up and one of them leads the next attempt."""
        self._running.add(directory)
        covered = self._requested[directory]
        self._condition.release()
        try:
            fsync_directory(directory)
        finally:
            self._condition.acquire()
            self._running.discard(directory)
            self._condition.notify_all()
        self.syncs += 1  # reached only when the fsync succeeded
        self._synced[directory] = max(self._synced.get(directory, 0), covered)
