"""Reading a ``blocks.core.log``: finding the segment of an offset, single reads, iteration.

Theory of operation
-------------------
A read maps an offset to the segment holding it (a bisection over the segments' base
offsets), refuses it if it lies in a damaged range (``Corruption``, never the bytes), and
reads it through a descriptor: the active segment's own, or one from a small cache of
read-only descriptors of older segments. Every read checks the checksum again
(``log.segment``). Iteration reads runs of records in chunks under the log's lock and
yields them outside it, so appends and retention go on between chunks.

``LogReads`` is a part of ``SegmentLog``, not a class of its own: it uses the log's fields
(declared below, set by ``SegmentLog``) and its lock.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections.abc import Iterator

from blocks.core.errors import Corruption, FailedPrecondition, NotFound
from blocks.core.log.config import as_offset
from blocks.core.log.segment import DescriptorCache, Segment
from blocks.core.log.storage import ActiveFile

__all__ = ["LogReads"]


class LogReads:
    """The read side of ``SegmentLog``: ``read``, ``iter_from`` and the offset lookup."""

    directory: str
    _lock: threading.RLock  # guards every field below
    _active: ActiveFile  # the last segment, the only one written
    _segments: list[Segment]  # oldest first; the last is ``_active.segment``
    _bases: list[int]  # the segments' base offsets, in the same order
    _damaged: list[tuple[int, int]]  # sorted [start, end) ranges whose reads raise Corruption
    _readers: DescriptorCache  # read-only descriptors of older segments
    _closed: bool
    _failure: OSError | None  # set when an fsync failed: refuse all work

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

    def _check_usable(self) -> None:
        if self._closed:
            raise FailedPrecondition(f"log {self.directory} is closed")
        if self._failure is not None:
            raise FailedPrecondition(f"log {self.directory} failed ({self._failure}); reopen it")
