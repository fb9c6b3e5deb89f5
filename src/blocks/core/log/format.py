"""Record framing for ``blocks.core.log``: encode, check and scan frames. Pure: no I/O.

Theory of operation
-------------------
A segment file is nothing but frames laid end to end; it has no file header, and its name
carries its base offset. Every frame is self-describing and self-checking::

    bytes 0..4     magic     b"\\xb1\\x0c\\x10\\x67", marks where a frame starts
    bytes 4..12    checksum  unsigned 64-bit little endian: xxh3-64 (seed 0) of bytes
                             12 .. 24+length, i.e. of the length, the offset and the payload
    bytes 12..16   length    unsigned 32-bit little endian: payload length in bytes
    bytes 16..24   offset    unsigned 64-bit little endian: the record's offset in the log
    bytes 24..     payload   ``length`` bytes, opaque to the log

The checksum covers the length, so a flipped length is caught before it is trusted to find
the next frame; it covers the offset, so a frame that sits at the wrong place (a stale or
duplicated block) is caught as well. The magic is not covered by the checksum (it is compared
as a constant) and exists so that a scan can *resynchronise* after a damaged frame: it looks
for the next magic (``bytes.find``, in C) and accepts the first candidate whose checksum holds
and whose offset lies ahead of the damage. That is how recovery tells a torn tail (nothing valid
follows the damage) from damage in the middle (valid frames follow): see ``scan_frames``.

Cost: 24 bytes per record; checking a frame is one ``struct`` unpack and one xxh3 pass over the
payload (several GB/s), so scanning is bound by the per-frame Python overhead for small records
and by the disk for large ones.
"""

from __future__ import annotations

import mmap
import struct
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import xxhash

__all__ = [
    "HEADER_BYTES",
    "LENGTH_MAX",
    "MAGIC",
    "OFFSET_END",
    "SegmentScan",
    "check_frame",
    "encode_frame",
    "encode_frames",
    "find_next_frame",
    "scan_frames",
]

MAGIC = b"\xb1\x0c\x10\x67"
"""The four bytes every frame starts with."""

_HEADER = struct.Struct("<4sQIQ")
_CHECKSUM = struct.Struct("<Q")
_LENGTH_OFFSET = struct.Struct("<IQ")

HEADER_BYTES = _HEADER.size
"""Bytes of framing before each payload (24)."""

_CHECKED_FROM = 12
"""The checksum covers the frame from this byte (the length field) to its end."""

OFFSET_END = 2**64
"""One past the largest offset a frame can carry."""

LENGTH_MAX = 2**32 - 1
"""The largest payload the length field can describe."""

ScanBuffer = bytes | bytearray | mmap.mmap
"""What the scanners read: file contents in memory or mapped."""

assert HEADER_BYTES == 24


def encode_frame(offset: int, payload: bytes | bytearray | memoryview) -> bytes:
    """Return the frame for ``payload`` at ``offset``; the caller has checked its bounds."""
    assert 0 <= offset < OFFSET_END and len(payload) <= LENGTH_MAX
    length_offset = _LENGTH_OFFSET.pack(len(payload), offset)
    hasher = xxhash.xxh3_64(length_offset)
    hasher.update(payload)
    return MAGIC + _CHECKSUM.pack(hasher.intdigest()) + length_offset + bytes(payload)


def encode_frames(first_offset: int, payloads: Sequence[bytes | bytearray | memoryview]) -> bytes:
    """Return the frames for ``payloads`` at consecutive offsets from ``first_offset``."""
    return b"".join(
        encode_frame(first_offset + index, payload) for index, payload in enumerate(payloads)
    )


def check_frame(
    buffer: ScanBuffer,
    position: int,
    offset_low: int,
    offset_high: int,
    record_bytes_max: int,
) -> tuple[int, int] | None:
    """Return ``(offset, payload_length)`` if a valid frame starts at ``position``, else None.

    Valid means: the whole frame lies inside ``buffer``, the magic matches, the length is at
    most ``record_bytes_max``, the offset lies in ``[offset_low, offset_high)`` and the
    checksum holds.
    """
    header_end = position + HEADER_BYTES
    if position < 0 or header_end > len(buffer):
        return None
    magic, checksum, length, offset = _HEADER.unpack_from(buffer, position)
    if magic != MAGIC or length > record_bytes_max or not offset_low <= offset < offset_high:
        return None
    frame_end = header_end + length
    if frame_end > len(buffer):
        return None
    if xxhash.xxh3_64_intdigest(buffer[position + _CHECKED_FROM : frame_end]) != checksum:
        return None
    return offset, length


def find_next_frame(
    buffer: ScanBuffer,
    start: int,
    offset_low: int,
    offset_high: int,
    record_bytes_max: int,
) -> tuple[int, int] | None:
    """Return ``(position, offset)`` of the first valid frame at or after ``start``, or None.

    Only frames whose offset lies in ``[offset_low, offset_high)`` count; candidates are found
    by searching for the magic, so the cost is one C-level search plus one check per candidate.
    """
    candidate = buffer.find(MAGIC, start)
    while candidate != -1:
        found = check_frame(buffer, candidate, offset_low, offset_high, record_bytes_max)
        if found is not None:
            return candidate, found[0]
        candidate = buffer.find(MAGIC, candidate + 1)
    return None


@dataclass(frozen=True, slots=True)
class SegmentScan:
    """What a scan of one segment's bytes found.

    ``next_offset`` is one past the last valid record; ``valid_bytes`` is where the last valid
    frame ends (the file may be cut there); ``tail_bytes`` counts the bytes after it that hold
    no valid frame. ``damaged`` lists ``[start, end)`` offset ranges whose frames are bad but
    that are followed by valid frames in the same segment. ``index_offsets`` and
    ``index_positions`` are the sparse index: parallel, increasing, the first record always in.
    """

    base_offset: int
    next_offset: int
    records: int
    valid_bytes: int
    tail_bytes: int
    damaged: tuple[tuple[int, int], ...]
    index_offsets: array[int]
    index_positions: array[int]


def scan_frames(
    buffer: ScanBuffer,
    base_offset: int,
    offset_limit: int,
    record_bytes_max: int,
    index_interval_bytes: int,
) -> SegmentScan:
    """Check every frame of a segment whose first record is ``base_offset``.

    Frames must carry consecutive offsets below ``offset_limit`` (the next segment's base).
    At a bad frame the scan resynchronises on the next valid frame with a larger offset and
    records the skipped offsets as damaged; if none follows, the rest is the tail. An index
    entry is kept for the first record, after each resynchronisation, and whenever a record
    starts at least ``index_interval_bytes`` past the previous entry.
    """
    index_offsets: array[int] = array("Q")
    index_positions: array[int] = array("Q")
    damaged: list[tuple[int, int]] = []
    position = 0
    expected = base_offset
    records = 0
    valid_bytes = 0
    force_entry = True
    last_entry = 0
    size = len(buffer)
    while position < size and expected < offset_limit:
        found = check_frame(buffer, position, expected, expected + 1, record_bytes_max)
        if found is None:
            resync = find_next_frame(buffer, position, expected + 1, offset_limit, record_bytes_max)
            if resync is None:
                break
            position, next_expected = resync
            damaged.append((expected, next_expected))
            expected = next_expected
            force_entry = True
            continue
        if force_entry or position - last_entry >= index_interval_bytes:
            index_offsets.append(expected)
            index_positions.append(position)
            last_entry = position
            force_entry = False
        position += HEADER_BYTES + found[1]
        valid_bytes = position
        expected += 1
        records += 1
    return SegmentScan(
        base_offset=base_offset,
        next_offset=expected,
        records=records,
        valid_bytes=valid_bytes,
        tail_bytes=size - valid_bytes,
        damaged=tuple(damaged),
        index_offsets=index_offsets,
        index_positions=index_positions,
    )
