"""One segment of ``blocks.core.log``: its sparse index and positioned reads.

Theory of operation
-------------------
A ``Segment`` is the in-memory view of one file: base offset, next offset, size in bytes, and
a *sparse index*, two parallel arrays (offsets, file positions) with one entry for the first
record, one after every resynchronisation past damage, and one whenever a record starts at
least ``index_interval_bytes`` after the previous entry. Every record not in the index
therefore starts less than ``index_interval_bytes`` after an entry, so finding a record is a
binary search in the index followed by a walk over the headers of at most that many bytes:
O(log n) plus one bounded read, never a scan of the file. The index costs 16 bytes per entry,
about 0.4% of the data at the default interval of 4 KiB.

Reads use ``os.pread`` on a descriptor the caller owns (``SegmentLog`` keeps the active one
open for writing and a small cache of read-only ones). Every frame returned has passed its
checksum; a frame that fails, or a header that does not continue the walk, raises
``Corruption`` (bytes damaged after the log was opened). The module opens and closes nothing.
"""

from __future__ import annotations

import os
import struct
from bisect import bisect_left, bisect_right
from collections import OrderedDict

from blocks.core.errors import Corruption
from blocks.core.log.format import (
    HEADER_BYTES,
    LENGTH_MAX,
    MAGIC,
    OFFSET_END,
    SegmentScan,
    check_frame,
    scan_frames,
)

__all__ = ["READ_CHUNK_BYTES", "DescriptorCache", "Segment", "segment_file_name"]

READ_CHUNK_BYTES = 1 << 20
"""Most bytes one sequential read asks for (a single larger record is read whole)."""

_HEADER = struct.Struct("<4sQIQ")


def segment_file_name(base_offset: int) -> str:
    """File name of the segment whose first record is ``base_offset`` (sorts numerically)."""
    return f"{base_offset:020d}.log"


def _pread_exact(descriptor: int, length: int, position: int) -> bytes:
    """Read exactly ``length`` bytes at ``position``, or fewer only at the end of the file."""
    parts: list[bytes] = []
    remaining = length
    while remaining > 0:
        part = os.pread(descriptor, remaining, position)
        if not part:
            break
        parts.append(part)
        position += len(part)
        remaining -= len(part)
    return b"".join(parts)


class Segment:
    """Index and bounds of one segment file; mutated only by ``SegmentLog`` under its lock."""

    __slots__ = (
        "_index_interval_bytes",
        "_index_offsets",
        "_index_positions",
        "_last_entry_position",
        "base_offset",
        "next_offset",
        "path",
        "size",
    )

    def __init__(self, path: str, scan: SegmentScan, index_interval_bytes: int) -> None:
        self.path = path
        self.base_offset = scan.base_offset
        self.next_offset = scan.next_offset  # one past the last valid record
        self.size = scan.valid_bytes  # bytes of valid frames; appends go here
        self._index_interval_bytes = index_interval_bytes
        self._index_offsets = scan.index_offsets
        self._index_positions = scan.index_positions
        self._last_entry_position = scan.index_positions[-1] if scan.index_positions else 0

    @classmethod
    def empty(cls, path: str, base_offset: int, index_interval_bytes: int) -> Segment:
        """The view of a new, empty segment file."""
        scan = scan_frames(b"", base_offset, OFFSET_END, LENGTH_MAX, index_interval_bytes)
        return cls(path, scan, index_interval_bytes)

    def __repr__(self) -> str:
        return f"Segment({self.path!r}, [{self.base_offset}, {self.next_offset}), {self.size}B)"

    @property
    def index_entries(self) -> int:
        """Number of entries in the sparse index."""
        return len(self._index_offsets)

    def note_append(self, offset: int, position: int, frame_bytes: int) -> None:
        """Account for a frame written at ``position``; it must be the next record."""
        assert offset == self.next_offset and position == self.size
        if not self._index_offsets or (
            position - self._last_entry_position >= self._index_interval_bytes
        ):
            self._index_offsets.append(offset)
            self._index_positions.append(position)
            self._last_entry_position = position
        self.next_offset = offset + 1
        self.size = position + frame_bytes

    def cut(self, offset: int, position: int) -> None:
        """Forget the records from ``offset`` on, whose frames start at file ``position``."""
        assert self.base_offset <= offset <= self.next_offset and position <= self.size
        keep = bisect_left(self._index_offsets, offset)
        del self._index_offsets[keep:]
        del self._index_positions[keep:]
        self._last_entry_position = self._index_positions[-1] if keep else 0
        self.next_offset = offset
        self.size = position

    def position_of(self, descriptor: int, offset: int) -> int:
        """File position of the frame for ``offset`` (which this segment holds)."""
        assert self._index_offsets and self._index_offsets[0] <= offset < self.next_offset
        entry = bisect_right(self._index_offsets, offset) - 1
        current = self._index_offsets[entry]
        position = self._index_positions[entry]
        if current == offset:
            return position
        window = _pread_exact(descriptor, self._index_interval_bytes + HEADER_BYTES, position)
        window_start = position
        while current < offset:
            local = position - window_start
            if local + HEADER_BYTES > len(window):
                window = _pread_exact(descriptor, self._index_interval_bytes, position)
                window_start, local = position, 0
                if len(window) < HEADER_BYTES:
                    raise Corruption(f"{self.path}: file ends inside the frame of {current}")
            magic, _checksum, length, frame_offset = _HEADER.unpack_from(window, local)
            if magic != MAGIC or frame_offset != current:
                raise Corruption(f"{self.path}: bad frame header for offset {current}")
            position += HEADER_BYTES + length
            current += 1
        return position

    def read(self, descriptor: int, offset: int) -> bytes:
        """Return the checked payload of ``offset``; ``Corruption`` if it fails its checksum."""
        position = self.position_of(descriptor, offset)
        header = _pread_exact(descriptor, HEADER_BYTES, position)
        if len(header) < HEADER_BYTES:
            raise Corruption(f"{self.path}: file ends inside the frame of {offset}")
        length = _HEADER.unpack_from(header, 0)[2]
        if position + HEADER_BYTES + length > self.size:
            raise Corruption(f"{self.path}: frame of {offset} claims {length} bytes")
        frame = header + _pread_exact(descriptor, length, position + HEADER_BYTES)
        if check_frame(frame, 0, offset, offset + 1, LENGTH_MAX) is None:
            raise Corruption(f"{self.path}: record {offset} failed its checksum")
        return frame[HEADER_BYTES:]

    def read_run(
        self,
        descriptor: int,
        position: int,
        offset: int,
        end_offset: int,
    ) -> tuple[list[tuple[int, bytes]], int]:
        """Read checked records ``offset, offset+1, ...`` (below ``end_offset``) from ``position``.

        Reads about ``READ_CHUNK_BYTES`` (more if the first record is larger) and returns the
        records wholly inside, at least one, with the position after the last.
        """
        assert offset < end_offset <= self.next_offset
        limit = min(self.size - position, READ_CHUNK_BYTES)
        chunk = _pread_exact(descriptor, limit, position)
        if len(chunk) >= HEADER_BYTES:
            first_length = _HEADER.unpack_from(chunk, 0)[2]
            if HEADER_BYTES + first_length > len(chunk) and (
                position + HEADER_BYTES + first_length <= self.size
            ):
                chunk = _pread_exact(descriptor, HEADER_BYTES + first_length, position)
        records: list[tuple[int, bytes]] = []
        local = 0
        while offset < end_offset:
            if local + HEADER_BYTES > len(chunk) or (
                local + HEADER_BYTES + _HEADER.unpack_from(chunk, local)[2] > len(chunk)
            ):
                if records:
                    break  # the next frame continues past this chunk
                raise Corruption(f"{self.path}: file ends inside the frame of {offset}")
            found = check_frame(chunk, local, offset, offset + 1, LENGTH_MAX)
            if found is None:
                raise Corruption(f"{self.path}: record {offset} failed its checksum")
            start = local + HEADER_BYTES
            local = start + found[1]
            records.append((offset, chunk[start:local]))
            offset += 1
        return records, position + local


class DescriptorCache:
    """Read-only descriptors of older segments, least recently used closed beyond a bound."""

    __slots__ = ("_descriptors", "_open_max")

    def __init__(self, open_max: int) -> None:
        assert open_max >= 1
        self._open_max = open_max
        self._descriptors: OrderedDict[str, int] = OrderedDict()

    def get(self, path: str) -> int:
        """Descriptor for ``path``, opening it (and closing the least recent) if needed."""
        descriptor = self._descriptors.get(path)
        if descriptor is not None:
            self._descriptors.move_to_end(path)
            return descriptor
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self._descriptors[path] = descriptor
        while len(self._descriptors) > self._open_max:
            _, oldest = self._descriptors.popitem(last=False)
            os.close(oldest)
        return descriptor

    def drop(self, path: str) -> None:
        """Close the descriptor for ``path`` if one is open."""
        descriptor = self._descriptors.pop(path, None)
        if descriptor is not None:
            os.close(descriptor)

    def close_all(self) -> None:
        """Close every cached descriptor."""
        while self._descriptors:
            _, descriptor = self._descriptors.popitem()
            os.close(descriptor)
