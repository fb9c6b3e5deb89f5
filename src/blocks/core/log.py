"""Segmented append-only log: checksummed records, fsync policy, group commit, crash recovery.

Theory of operation
-------------------
A log is a directory of segment files, each named by the offset of its first record
(``00000000000000000000.log``), plus a ``LOCK`` file. Records get dense offsets, one after
another; only the last segment (the *active* one) is written, and it rolls to a new file when
the next record would take it past ``segment_bytes_max``. Every record is framed with a magic,
its length, its offset and an xxh3-64 checksum (``log_format`` documents it byte by byte).
``truncate_before`` deletes whole segments below an offset: that is retention.
``truncate_from`` cuts the tail, ``restart_at`` empties the log at a later offset, and
``rewrite_segment`` replaces a sealed segment's records
at the same offsets (compaction); ``log_rewrite`` says how each survives a crash. No code
outside the log touches its files.

Durability is explicit. A record is *acknowledged durable* when one of these returns:

* ``append``/``append_many`` under ``fsync="always"`` (one fsync per call);
* the awaited ``append_async``/``append_many_async`` under ``fsync="batch"`` (group commit:
  concurrent callers in one window of ``batch_delay_ms`` share one fsync, see ``log_commit``;
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

On open, every segment is scanned, checked and indexed (``log_recovery`` states the policy:
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
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType

from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import (
    Corruption,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Overloaded,
    StorageError,
    storage_error,
)
from blocks.core.log_commit import GroupCommitter
from blocks.core.log_config import (
    FsyncPolicy,
    LogConfig,
    LogStats,
    MiB,
    acquire_lock,
    as_offset,
    as_payloads,
)
from blocks.core.log_format import HEADER_BYTES, OFFSET_END, encode_frame
from blocks.core.log_recovery import RecoveryReport, open_segments
from blocks.core.log_rewrite import cut_file, delete_newest_first, write_segment_file
from blocks.core.log_segment import DescriptorCache, Segment
from blocks.core.log_storage import ActiveFile, StorageCounters, fsync_directory, fsync_path

__all__ = ["FsyncPolicy", "LogConfig", "LogStats", "RecoveryReport", "SegmentLog"]

_OPEN_SEGMENTS_MAX = 32  # read-only descriptors of older segments kept open


class SegmentLog:
    """A durable, segmented, append-only sequence of byte records with dense offsets."""

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
        )
        self.directory = os.fspath(directory)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._syncs = self.config.fsync != "never"
        os.makedirs(self.directory, exist_ok=True)
        self._lock_descriptor = acquire_lock(self.directory)
        self._lock = threading.RLock()  # guards every field below
        self._counters = StorageCounters()
        self._failure: OSError | None = None  # set when an fsync failed: refuse all work
        self._unsynced_paths: list[str] = []  # rolled segments not yet fsynced ("never")
        self._directory_dirty = False  # segment files created or deleted since a dir fsync
        try:
            self._open_segments()
        except BaseException:
            os.close(self._lock_descriptor)
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
        self._segments: list[Segment] = segments
        self._bases = [segment.base_offset for segment in segments]
        self._damaged: list[tuple[int, int]] = sorted(self.recovery.damaged)
        self._readers = DescriptorCache(_OPEN_SEGMENTS_MAX)
        self._active = ActiveFile(segments[-1], self._counters)
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
        (``blocks.blob.journal``); asyncio callers use ``append_many_async``. Under
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
        if self._syncs:
            old.fsync(self._fail)
            self._durable_offset = max(self._durable_offset, old.segment.next_offset)
        else:
            self._unsynced_paths.append(old.segment.path)
        old.close()
        base = old.segment.next_offset
        interval = self.config.index_interval_bytes
        self._active = ActiveFile.create(self.directory, base, interval, self._counters)
        self._segments.append(self._active.segment)
        self._bases.append(base)
        self._directory_dirty = True
        if self._syncs:
            self._sync_directory()

    def _sync_directory(self) -> None:
        self._directory_dirty = False
        fsync_directory(self.directory, self._counters)

    def _fail(self, error: OSError) -> None:
        """Refuse all further work: after a failed fsync the page cache cannot be trusted."""
        self._failure = error

    def _check_usable(self) -> None:
        if self._closed:
            raise FailedPrecondition(f"log {self.directory} is closed")
        if self._failure is not None:
            raise FailedPrecondition(f"log {self.directory} failed ({self._failure}); reopen it")

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

    # -- reading ---------------------------------------------------------------------------

    def read(self, offset: int) -> bytes:
        """Return the record at ``offset``.

        Raises ``NotFound`` below ``first_offset`` or at/after ``next_offset``, ``Corruption``
        for an offset in a damaged range or whose bytes fail their checksum.
        """
        offset = as_offset(offset)
        with self._lock:
            self._check_usable()
            segment = self._segment_for(offset)
            return segment.read(self._descriptor(segment), offset)

    def iter_from(self, offset: int) -> Iterator[tuple[int, bytes]]:
        """Yield ``(offset, record)`` from ``offset`` up to the end, including later appends.

        Reads in chunks of about 1 MiB under the lock, yielding outside it. Raises like
        ``read`` (``NotFound`` if retention removes the segment being read).
        """
        offset = as_offset(offset)
        with self._lock:
            self._check_usable()
            next_offset = self._active.segment.next_offset
            if not self._bases[0] <= offset <= next_offset:  # raised now, not at next()
                raise NotFound(f"offset {offset} is outside [{self._bases[0]}, {next_offset}]")
        return self._iterate(offset)

    def _iterate(self, offset: int) -> Iterator[tuple[int, bytes]]:
        cursor: tuple[Segment, int] | None = None  # (segment, position of ``offset``)
        while True:
            with self._lock:
                self._check_usable()
                if offset >= self._active.segment.next_offset:
                    return
                segment = self._segment_for(offset)
                descriptor = self._descriptor(segment)
                if cursor is None or cursor[0] is not segment:
                    cursor = (segment, segment.position_of(descriptor, offset))
                end = segment.next_offset
                for start, _ in self._damaged:
                    if offset < start < end:
                        end = start
                records, position = segment.read_run(descriptor, cursor[1], offset, end)
                cursor = (segment, position)
            yield from records
            offset = records[-1][0] + 1

    def _segment_for(self, offset: int) -> Segment:
        next_offset = self._active.segment.next_offset
        if not self._bases[0] <= offset < next_offset:
            raise NotFound(f"offset {offset} is outside [{self._bases[0]}, {next_offset})")
        for start, end in self._damaged:
            if start <= offset < end:
                raise Corruption(f"record {offset} is in a damaged range [{start}, {end})")
        segment = self._segments[bisect_right(self._bases, offset) - 1]
        if offset >= segment.next_offset:  # an older segment that ended early
            raise Corruption(f"record {offset} is missing from {segment.path}")
        return segment

    def _descriptor(self, segment: Segment) -> int:
        if segment is self._active.segment:
            return self._active.descriptor
        return self._readers.get(segment.path)

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

    @property
    def segment_bases(self) -> tuple[int, ...]:
        """Base offsets of the segments, oldest first; the last is the active segment."""
        with self._lock:
            return tuple(self._bases)

    def truncate_from(self, offset: int) -> int:
        """Remove every record at ``offset`` or later; return ``next_offset`` (now ``offset``).

        Durable on return under every policy; a crash part way leaves a prefix of the log
        (``log_rewrite``). For a replica cutting a divergent tail: the caller has no appends in
        flight. Raises ``InvalidArgument`` outside ``[first_offset, next_offset]`` and
        ``Corruption`` for an offset in a damaged range, with nothing changed.
        """
        offset = as_offset(offset)
        with self._lock:
            self._check_usable()
            if not self._bases[0] <= offset <= self._active.segment.next_offset:
                raise InvalidArgument(f"offset {offset} is outside the log")
            if offset == self._active.segment.next_offset:
                return offset
            self.sync()
            keep = bisect_right(self._bases, offset) - 1
            target = self._segments[keep]
            if offset < target.next_offset:
                self._segment_for(offset)  # Corruption in a damaged range
                position = target.position_of(self._descriptor(target), offset)
            elif offset == target.next_offset:
                position = target.size
            else:
                raise Corruption(f"record {offset} is missing from {target.path}")
            self._cuts += 1
            self._active.close()
            self._readers.close_all()
            try:
                paths = [segment.path for segment in self._segments[keep + 1 :]]
                delete_newest_first(self.directory, paths, self._counters)
                del self._segments[keep + 1 :], self._bases[keep + 1 :]
                cut_file(target.path, position, self._counters)
                target.cut(offset, position)
                self._active = ActiveFile(target, self._counters)
            except OSError as error:
                self._fail(error)
                raise storage_error(error, f"truncating {self.directory}") from error
            self._damaged = [(s, min(e, offset)) for s, e in self._damaged if s < offset]
            self._durable_offset = offset
            return offset

    def restart_at(self, offset: int) -> None:
        """Drop every record and go on empty at ``offset``: a replica whose leader's log
        starts where this one has no records.

        The segments are deleted newest first, each deletion durable, then the empty segment
        for ``offset`` is created and made durable: a crash part way leaves a prefix of the
        log, or an empty log at 0.
        """
        offset = as_offset(offset)
        with self._lock:
            self._check_usable()
            if not 0 <= offset < OFFSET_END:
                raise InvalidArgument(f"offset {offset} is out of range")
            self.sync()
            self._cuts += 1
            self._active.close()
            self._readers.close_all()
            interval = self.config.index_interval_bytes
            try:
                paths = [segment.path for segment in self._segments]
                delete_newest_first(self.directory, paths, self._counters)
                self._active = ActiveFile.create(self.directory, offset, interval, self._counters)
                self._sync_directory()
            except OSError as error:
                self._fail(error)
                raise storage_error(error, f"restarting {self.directory}") from error
            except StorageError as error:  # from creating the segment
                self._fail(OSError(str(error)))
                raise
            self._segments = [self._active.segment]
            self._bases = [offset]
            self._damaged = []
            self._durable_offset = offset

    def rewrite_segment(self, base_offset: int, records: Iterable[bytes]) -> None:
        """Replace the records of the sealed segment starting at ``base_offset`` by ``records``,
        one for each offset it holds, atomically (``log_rewrite``): offsets never change.

        For compaction. Raises ``InvalidArgument`` (no sealed segment starts there, a wrong
        number of records, a bad record) or ``Corruption`` (the segment has a damaged range),
        with nothing changed; a storage failure part way leaves the segment old or new and
        the log refusing work until reopened.
        """
        base_offset = as_offset(base_offset)
        payloads = as_payloads(records, self.config.record_bytes_max)
        with self._lock:
            self._check_usable()
            index = bisect_right(self._bases, base_offset) - 1
            if index < 0 or self._bases[index] != base_offset or index == len(self._bases) - 1:
                raise InvalidArgument(f"no sealed segment starts at offset {base_offset}")
            segment = self._segments[index]
            if len(payloads) != segment.next_offset - base_offset:
                raise InvalidArgument(
                    f"segment {base_offset} holds {segment.next_offset - base_offset} records,"
                    f" not {len(payloads)}"
                )
            for start, end in self._damaged:
                if start < segment.next_offset and end > base_offset:
                    raise Corruption(f"segment {base_offset} has a damaged range [{start}, {end})")
            self._readers.drop(segment.path)
            interval = self.config.index_interval_bytes
            try:
                self._segments[index] = write_segment_file(
                    segment, payloads, interval, self._counters
                )
            except OSError as error:
                self._fail(error)
                raise storage_error(error, f"rewriting {segment.path}") from error

    def close(self) -> None:
        """Sync (unless ``never``), then release files and the lock. Idempotent."""
        with self._lock:
            if self._closed:
                return
            try:
                if self._syncs and self._failure is None:
                    self.sync()
            finally:
                self._closed = True
                self._active.close()
                self._readers.close_all()
                os.close(self._lock_descriptor)

    def __enter__(self) -> SegmentLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"next_offset={self.next_offset}"
        return f"SegmentLog({self.directory!r}, fsync={self.config.fsync!r}, {state})"
