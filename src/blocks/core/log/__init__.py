"""Segmented append-only log: checksummed records, fsync policy, group commit, crash recovery.

Theory of operation
-------------------
A log is a directory of segment files, each named by the offset of its first record
(``00000000000000000000.log``), plus a ``LOCK`` file. Records get dense offsets, one after
another; only the last segment (the *active* one) is written, and it rolls to a new file when
the next record would take it past ``segment_bytes_max``. Every record is framed with a magic,
its length, its offset and an xxh3-64 checksum (``log.format`` documents it byte by byte).
``truncate_before`` deletes whole segments below an offset: that is retention.
``truncate_from`` cuts the tail, ``restart_at`` empties the log at a later offset, and
``rewrite_segment`` replaces a sealed segment's records at the same offsets (compaction);
``log.rewrite`` holds them and says how each survives a crash. No code outside the log touches
its files. Reads and iteration are in ``log.reads``.

Durability is explicit. A record is *acknowledged durable* when one of these returns:

* ``append``/``append_many`` under ``fsync="always"`` (one fsync per call);
* the awaited ``append_async``/``append_many_async`` under ``fsync="batch"`` (group commit:
  concurrent callers in one window of ``batch_delay_ms`` share one fsync, see ``log.commit``;
  logs opened with one ``commit_group`` share its rounds, and its window and limit apply);
* the awaited ``append_async``/``append_many_async`` under ``fsync="always"``: group commit
  without a window (a log's own group has none; a shared ``commit_group`` keeps its own):
  the first waiter starts an fsync at once and the callers that arrive while it runs share
  the next one. Each caller still returns only once its records are durable, which is all
  ``always`` promises; what it no longer does is block the event loop for one fsync per call;
* ``sync()``, under any policy (and ``close()`` under ``always`` and ``batch``).

Under ``batch`` a plain ``append`` also fsyncs once the window has elapsed since the last
fsync (time from the injected ``Clock``); under ``never`` only ``sync()`` fsyncs. The directory
is fsynced when a segment is created or deleted (under ``never``, at the next ``sync()``).
``durable_offset`` says how far the guarantee reaches.

On open, every segment is scanned, checked and indexed (``log.recovery`` states the policy:
a torn tail is cut and reported in ``recovery``; damage followed by valid records becomes a
damaged range whose reads raise ``Corruption``). A corrupt record is never returned as data:
every read checks the checksum again. A failed write is rolled back; a failed fsync leaves
the page cache in an unknown state, so the log refuses all further work until reopened.

One process at a time: opening takes an exclusive ``flock`` on ``LOCK`` and a second open
raises ``FailedPrecondition``. Within a process the methods are thread-safe.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence

from blocks.core.clock import Clock, SystemClock
from blocks.core.directory_lock import DirectoryLock
from blocks.core.errors import InvalidArgument, Overloaded
from blocks.core.log.commit import GroupCommitter
from blocks.core.log.config import (
    FsyncPolicy,
    LogConfig,
    LogStats,
    MiB,
    as_offset,
    as_payloads,
)
from blocks.core.log.format import HEADER_BYTES, encode_frame
from blocks.core.log.recovery import RecoveryReport, open_segments
from blocks.core.log.rewrite import LogSurgery
from blocks.core.log.segment import DescriptorCache
from blocks.core.log.storage import StorageCounters, fsync_directory, fsync_path

__all__ = [
    "FsyncPolicy",
    "GroupCommitter",
    "LogConfig",
    "LogStats",
    "RecoveryReport",
    "SegmentLog",
]

_OPEN_SEGMENTS_MAX = 32  # read-only descriptors of older segments kept open


class SegmentLog(LogSurgery):
    """A durable, segmented, append-only sequence of byte records with dense offsets.

    Its reads (``read``, ``iter_from``) are in ``log.reads``, its tail cuts, restarts and
    segment rewrites (``truncate_from``, ``restart_at``, ``rewrite_segment``,
    ``segment_bases``) in ``log.rewrite``; both work on the fields set here.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        segment_bytes_max: int = 64 * MiB,
        fsync: FsyncPolicy = "always",
        record_bytes_max: int | None = None,
        batch_delay_ms: float = 2.0,
        batch_records_max: int = 4096,
        pending_records_max: int = 65_536,
        index_interval_bytes: int = 4096,
        padding_bytes: int = 256 * 1024,
        clock: Clock | None = None,
        commit_group: GroupCommitter | None = None,
    ) -> None:
        if record_bytes_max is None:
            record_bytes_max = min(8 * MiB, max(0, segment_bytes_max - HEADER_BYTES))
        self.config = LogConfig(
            segment_bytes_max=segment_bytes_max,
            fsync=fsync,
            record_bytes_max=record_bytes_max,
            batch_delay_ms=batch_delay_ms,
            batch_records_max=batch_records_max,
            pending_records_max=pending_records_max,
            index_interval_bytes=index_interval_bytes,
            padding_bytes=padding_bytes,
        )
        self.directory = os.fspath(directory)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._syncs = self.config.fsync != "never"
        os.makedirs(self.directory, exist_ok=True)
        self._directory_lock = DirectoryLock(self.directory)  # keeps a second writer out
        self._lock = threading.RLock()  # guards every field below
        self._counters = StorageCounters()
        self._failure: OSError | None = None  # set when an fsync failed: refuse all work
        self._unsynced_paths: list[str] = []  # rolled segments not yet fsynced ("never")
        self._directory_dirty = False  # segment files created or deleted since a dir fsync
        try:
            self._open_segments()
        except BaseException:
            self._directory_lock.release()
            raise
        self._records_appended = 0
        self._bytes_appended = 0
        self._cuts = 0  # tail cuts and restarts so far (an fsync begun before one is stale)
        self._closed = False
        if commit_group is None:  # a group of one; no window under "always" (see module docs)
            delay_ms = 0.0 if self.config.fsync == "always" else self.config.batch_delay_ms
            commit_group = GroupCommitter(delay_ms, self.config.batch_records_max)
        self.commit_group = commit_group
        self._committer = commit_group.member(
            self._sync_for_commit,
            lambda: self.durable_offset,
            lambda: self.next_offset - self.durable_offset,
        )

    def _open_segments(self) -> None:
        segments, self.recovery = open_segments(
            self.directory, self.config.index_interval_bytes, self._syncs, self._counters
        )
        self._segments = segments
        self._bases = [segment.base_offset for segment in segments]
        self._damaged = sorted(self.recovery.damaged)
        self._readers = DescriptorCache(_OPEN_SEGMENTS_MAX)
        self._active = self._open_active(segments[-1])
        if self._syncs:  # recovery fsynced every segment
            self._durable_offset = segments[-1].next_offset
        else:  # nothing is durable until the first sync()
            self._durable_offset = self._bases[0]
            self._unsynced_paths = [segment.path for segment in segments[:-1]]
            self._directory_dirty = True
        self._last_sync_s = self._clock.monotonic()

    # -- properties ------------------------------------------------------------------------

    @property
    def first_offset(self) -> int:
        """Offset of the first retained record (the base of the oldest segment)."""
        with self._lock:
            return self._bases[0]

    @property
    def next_offset(self) -> int:
        """Offset the next appended record will get."""
        with self._lock:
            return self._active.segment.next_offset

    @property
    def durable_offset(self) -> int:
        """Every record below this offset is acknowledged durable."""
        with self._lock:
            return self._durable_offset

    @property
    def closed(self) -> bool:
        """True once ``close`` has run."""
        return self._closed

    def stats(self) -> LogStats:
        """Counters and shape, read atomically."""
        with self._lock:
            return LogStats(
                records_appended=self._records_appended,
                bytes_appended=self._bytes_appended,
                fsyncs=self._counters.fsyncs,
                directory_fsyncs=self._counters.directory_fsyncs,
                segments=len(self._segments),
                index_entries=sum(segment.index_entries for segment in self._segments),
                first_offset=self._bases[0],
                next_offset=self._active.segment.next_offset,
                durable_offset=self._durable_offset,
            )

    # -- appending -------------------------------------------------------------------------

    def append(self, record: bytes) -> int:
        """Append one record and return its offset; durable on return under ``always``.

        Raises ``InvalidArgument`` (not bytes, larger than ``record_bytes_max``) or
        ``FailedPrecondition`` (closed or failed log) with nothing written.
        """
        return self.append_many((record,))[0]

    def append_many(self, records: Iterable[bytes]) -> list[int]:
        """Append records at consecutive offsets with one write (per segment) and one fsync.

        All records are checked before any is written. Not atomic across a crash: a prefix of
        the batch may survive one that happens before the call returns.
        """
        payloads = as_payloads(records, self.config.record_bytes_max)
        return self._append(payloads, inline_sync=True, pending_max=None)

    async def append_async(self, record: bytes) -> int:
        """Append one record; under ``batch``, return once it is durable (group commit)."""
        return (await self.append_many_async((record,)))[0]

    async def append_many_async(self, records: Iterable[bytes]) -> list[int]:
        """Append records; under ``batch`` and ``always``, return once all are durable,
        sharing fsyncs with the concurrent callers (group commit, see the module docs).

        Raises ``Overloaded`` (nothing written) when more than ``pending_records_max``
        records would be waiting for an fsync. Under ``never`` this is ``append_many``.
        """
        payloads = as_payloads(records, self.config.record_bytes_max)
        if self.config.fsync == "never":
            return self._append(payloads, inline_sync=True, pending_max=None)
        if len(payloads) > self.config.pending_records_max:
            raise InvalidArgument(
                f"a batch of {len(payloads)} records exceeds pending_records_max"
                f"={self.config.pending_records_max}"
            )
        offsets = self._append(
            payloads, inline_sync=False, pending_max=self.config.pending_records_max
        )
        if offsets:
            await self._committer.wait_durable(offsets[-1] + 1)
        return offsets

    def append_many_synced(self, records: Iterable[bytes]) -> list[int]:
        """Append records and, under ``batch``, return once they are durable, with the fsync
        run outside the log's lock (reads and appends of other threads go on meanwhile).

        For a thread that batches its own callers, as a leader of a group commit does
        (``blocks.blob.storage.journal``); asyncio callers use ``append_many_async``. Under
        ``always`` and ``never`` this is ``append_many``.
        """
        payloads = as_payloads(records, self.config.record_bytes_max)
        if self.config.fsync != "batch":
            return self._append(payloads, inline_sync=True, pending_max=None)
        offsets = self._append(payloads, inline_sync=False, pending_max=None)
        if offsets:
            self._sync_for_commit()
        return offsets

    def _append(
        self, payloads: Sequence[bytes], *, inline_sync: bool, pending_max: int | None
    ) -> list[int]:
        with self._lock:
            self._check_usable()
            active = self._active.segment
            if pending_max is not None and (
                active.next_offset - self._durable_offset + len(payloads) > pending_max
            ):
                raise Overloaded(
                    "too many records are waiting for an fsync",
                    retry_after_ms=max(1, round(self.config.batch_delay_ms)),
                )
            offsets = list(range(active.next_offset, active.next_offset + len(payloads)))
            frames: list[bytes] = []
            frames_bytes = 0
            for offset, payload in zip(offsets, payloads, strict=True):
                frame_bytes = HEADER_BYTES + len(payload)
                fits = self._active.segment.size + frames_bytes + frame_bytes
                if fits > self.config.segment_bytes_max and (frames or self._active.segment.size):
                    self._write(frames)
                    frames, frames_bytes = [], 0
                    self._roll()
                frames.append(encode_frame(offset, payload))
                frames_bytes += frame_bytes
            self._write(frames)
            self._records_appended += len(payloads)
            self._bytes_appended += sum(len(payload) for payload in payloads)
            if inline_sync and (
                self.config.fsync == "always"
                or (
                    self.config.fsync == "batch"
                    and self._clock.monotonic() - self._last_sync_s
                    >= self.config.batch_delay_ms / 1e3
                )
            ):
                self.sync()
            return offsets

    def _write(self, frames: list[bytes]) -> None:
        if frames:
            self._active.write_frames(frames, self._fail)

    def _roll(self) -> None:
        """Close the active segment (durably unless ``never``) and start the next one."""
        old = self._active
        old.seal()
        if self._syncs:
            old.fsync(self._fail)
            self._durable_offset = max(self._durable_offset, old.segment.next_offset)
        else:
            self._unsynced_paths.append(old.segment.path)
        old.close()
        base = old.segment.next_offset
        self._active = self._create_active(base)
        self._segments.append(self._active.segment)
        self._bases.append(base)
        self._directory_dirty = True
        if self._syncs:
            self._sync_directory()

    # -- durability ------------------------------------------------------------------------

    def _sync_directory(self) -> None:
        self._directory_dirty = False
        fsync_directory(self.directory, self._counters)

    def _fail(self, error: OSError) -> None:
        """Refuse all further work: after a failed fsync the page cache cannot be trusted."""
        self._failure = error

    def sync(self) -> int:
        """Make every record appended so far durable; return the new ``durable_offset``.

        Fsyncs the active segment, any segment rolled without an fsync (``never``) and the
        directory if segments were created or deleted since its last fsync.
        """
        with self._lock:
            self._check_usable()
            target = self._active.segment.next_offset
            while self._unsynced_paths:
                fsync_path(self._unsynced_paths.pop(), self._counters)
            if self._directory_dirty:
                self._sync_directory()
            if target > self._durable_offset:
                self._active.fsync(self._fail)
                self._durable_offset = target
            self._last_sync_s = self._clock.monotonic()
            return self._durable_offset

    def _sync_for_commit(self) -> int:
        """``sync`` for the group commit (``batch`` only), without holding the log's lock
        during the fsync so that the event loop keeps appending meanwhile."""
        with self._lock:
            self._check_usable()
            active, target = self._active, self._active.segment.next_offset
            if target <= self._durable_offset:
                return self._durable_offset
            cuts = self._cuts
        active.fsync(self._fail)  # skipped if rolled or closed: both fsynced it first
        with self._lock:
            if self._failure is not None:
                self._check_usable()
            if cuts != self._cuts:  # the tail was cut meanwhile: target may not exist now
                return self._durable_offset
            self._durable_offset = max(self._durable_offset, target)
            self._last_sync_s = self._clock.monotonic()
            return self._durable_offset

    # -- retention and lifecycle -----------------------------------------------------------

    def truncate_before(self, offset: int) -> int:
        """Delete every segment whose records all lie below ``offset``; return ``first_offset``.

        The active segment is never deleted, so ``first_offset`` may stay below ``offset``.
        Raises ``InvalidArgument`` for an offset past ``next_offset``.
        """
        offset = as_offset(offset)
        with self._lock:
            self._check_usable()
            if offset > self._active.segment.next_offset:
                raise InvalidArgument(f"offset {offset} is past next_offset")
            removed = 0
            while len(self._segments) > 1 and self._bases[1] <= offset:
                segment = self._segments.pop(0)
                self._bases.pop(0)
                self._readers.drop(segment.path)
                os.unlink(segment.path)
                removed += 1
            if removed:
                first = self._bases[0]
                self._damaged = [(max(s, first), e) for s, e in self._damaged if e > first]
                self._directory_dirty = True
                if self._syncs:
                    self._sync_directory()
            return self._bases[0]

    def close(self) -> None:
        """Sync (unless ``never``), then release files and the lock. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._active.seal()
            try:
                if self._syncs and self._failure is None:
                    self.sync()
            finally:
                self._closed = True
                self._active.close()
                self._readers.close_all()
                self._directory_lock.release()

    def __enter__(self) -> SegmentLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"next_offset={self.next_offset}"
        return f"SegmentLog({self.directory!r}, fsync={self.config.fsync!r}, {state})"
