"""Changing a ``blocks.core.log`` in place: cutting its tail, restarting it, rewriting a segment.

Theory of operation
-------------------
Appends and retention (``truncate_before``) only add at the end and drop whole segments from
the front. Three rarer operations need more, and live here so that only the log touches its
files:

* **Cutting the tail** (``SegmentLog.truncate_from``): the segments wholly at or above the cut
  are deleted newest first, the directory fsynced after each deletion, so that a crash at any
  step leaves a log that is a prefix of the old one with no hole in it. The segment holding
  the cut is then truncated at the first frame to go (``ftruncate`` on a frame boundary, then
  fsync): after a crash it is either whole or cut, and either way a valid segment.
* **Rewriting a sealed segment** (``SegmentLog.rewrite_segment``): its new frames, at the same
  offsets, are written to a temporary file beside it (``<segment>.rewrite``, a name recovery
  does not read), fsynced, renamed over it, and the directory fsynced. A crash leaves the
  segment either old or new, never half written; a leftover temporary file is overwritten by
  the next rewrite. Offsets never change, so no other segment is touched.
* **Restarting** (``SegmentLog.restart_at``): every segment is deleted newest first as above,
  then the empty segment for the new offset is created and the directory fsynced.

The file functions keep no state, look ``os.fsync`` and the rename up at each call (so the
power-loss disk of the simulator sees them) and raise ``OSError`` as the disk does.
``LogSurgery`` is the ``SegmentLog`` side of these operations, a part of the log rather than a
class of its own: under the log's lock it checks the arguments, calls the file functions,
brings the log's segment list, damaged ranges and ``durable_offset`` in line with the files,
and after a failure makes the log refuse further work.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections.abc import Iterable

from blocks.core.errors import Corruption, InvalidArgument, StorageError, storage_error
from blocks.core.log.config import LogConfig, as_offset, as_payloads
from blocks.core.log.format import LENGTH_MAX, OFFSET_END, encode_frames, scan_frames
from blocks.core.log.reads import LogReads
from blocks.core.log.segment import Segment
from blocks.core.log.storage import ActiveFile, StorageCounters, fsync_directory

__all__ = [
    "REWRITE_SUFFIX",
    "LogSurgery",
    "cut_file",
    "delete_newest_first",
    "write_segment_file",
]

REWRITE_SUFFIX = ".rewrite"
"""Suffix of the temporary file a segment's new contents are written to before the rename."""

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def delete_newest_first(directory: str, paths: list[str], counters: StorageCounters) -> None:
    """Unlink ``paths`` (in offset order) from the last to the first, making each removal
    durable before the next so that a crash never leaves a hole in the log."""
    for path in reversed(paths):
        os.unlink(path)
        fsync_directory(directory, counters)


def cut_file(path: str, size: int, counters: StorageCounters) -> None:
    """Truncate the closed segment file ``path`` to ``size`` bytes (a frame boundary), durably."""
    descriptor = os.open(path, os.O_WRONLY | _CLOEXEC)
    try:
        os.ftruncate(descriptor, size)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    counters.count_fsync()


def write_segment_file(
    segment: Segment,
    payloads: list[bytes],
    index_interval_bytes: int,
    counters: StorageCounters,
) -> Segment:
    """Replace the closed, sealed ``segment``'s file atomically by one holding ``payloads`` at
    its offsets (exactly as many as it spans); return the view of the new file."""
    assert len(payloads) == segment.next_offset - segment.base_offset
    data = encode_frames(segment.base_offset, payloads)
    temporary = segment.path + REWRITE_SUFFIX
    directory = os.path.dirname(segment.path)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        written = 0
        while written < len(data):
            written += os.write(descriptor, view[written:])
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    counters.count_fsync()
    os.replace(temporary, segment.path)
    fsync_directory(directory, counters)
    scan = scan_frames(
        data, segment.base_offset, segment.next_offset, LENGTH_MAX, index_interval_bytes
    )
    assert scan.next_offset == segment.next_offset and not scan.damaged
    return Segment(segment.path, scan, index_interval_bytes)


class LogSurgery(LogReads):
    """``SegmentLog``'s tail cuts, restarts and segment rewrites (see the module docs)."""

    config: LogConfig
    _counters: StorageCounters
    _cuts: int  # tail cuts and restarts so far (an fsync begun before one is stale)
    _durable_offset: int  # every record below it is acknowledged durable

    # Defined by SegmentLog, the only class built on this one.

    def sync(self) -> int:
        raise NotImplementedError

    def _fail(self, error: OSError) -> None:
        raise NotImplementedError

    def _sync_directory(self) -> None:
        raise NotImplementedError

    def _open_active(self, segment: Segment) -> ActiveFile:
        config = self.config
        return ActiveFile(segment, self._counters, config.padding_bytes, config.segment_bytes_max)

    def _create_active(self, base_offset: int) -> ActiveFile:
        config = self.config
        return ActiveFile.create(
            self.directory,
            base_offset,
            config.index_interval_bytes,
            self._counters,
            config.padding_bytes,
            config.segment_bytes_max,
        )

    @property
    def segment_bases(self) -> tuple[int, ...]:
        """Base offsets of the segments, oldest first; the last is the active segment."""
        with self._lock:
            return tuple(self._bases)

    def truncate_from(self, offset: int) -> int:
        """Remove every record at ``offset`` or later; return ``next_offset`` (now ``offset``).

        Durable on return under every policy; a crash part way leaves a prefix of the log
        (``log.rewrite``). For a replica cutting a divergent tail: the caller has no appends in
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
                self._active = self._open_active(target)
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
            try:
                paths = [segment.path for segment in self._segments]
                delete_newest_first(self.directory, paths, self._counters)
                self._active = self._create_active(offset)
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
        one for each offset it holds, atomically (``log.rewrite``): offsets never change.

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
