"""On-disk record formats of the Bitcask engine: data records and hint entries.

Theory of operation: a data file is a plain concatenation of records, each self-describing
and checksummed, so that a file can be scanned from its start without any index::

    crc32 u32 | flags u8 | timestamp_ms u64 | key_len u32 | value_len u32 | key | value

All integers are little-endian. The CRC covers every byte after itself (header rest, key and
value), so a flipped bit anywhere in a record, including in its length fields, is detected.
``flags`` marks tombstones (deletes), which carry an empty value.

A hint file sits next to a data file written by merge and lists, per live key, where its
record lives, so that start-up reads a few bytes per key instead of every value::

    crc32 u32 | flags u8 | timestamp_ms u64 | key_len u32 | record_size u32 | offset u64 | key

and ends with a trailer ``entry_count u64 | crc32-of-body u32 | magic``; a hint file whose
trailer does not check out is ignored and the data file is scanned instead.

Parsing never trusts a length before the checksum: ``decode_record_at`` first checks that the
header and the claimed body fit in the buffer (otherwise the record is *torn*: it runs past the
end of the file) and then that the CRC matches (otherwise it is *corrupt*). Both outcomes are
returned as values, never raised, because the caller decides what they mean (a torn tail of
the newest file is a crash; anything else is damage).
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass

__all__ = [
    "FLAG_TOMBSTONE",
    "HEADER",
    "HINT_HEADER",
    "HINT_MAGIC",
    "HINT_TRAILER",
    "DecodedRecord",
    "HintEntry",
    "ScanStatus",
    "decode_hints",
    "decode_record_at",
    "encode_hint",
    "encode_hint_trailer",
    "encode_record",
    "record_value",
    "scan_records",
]

HEADER = struct.Struct("<IBQII")
"""crc32, flags, timestamp_ms, key_len, value_len: 21 bytes."""

_CRC = struct.Struct("<I")
_HEADER_REST = struct.Struct("<BQII")  # HEADER without its crc: what the crc covers first

HINT_HEADER = struct.Struct("<IBQIIQ")
"""crc32, flags, timestamp_ms, key_len, record_size, offset: 29 bytes."""

HINT_TRAILER = struct.Struct("<QI8s")
"""entry_count, crc32 of every entry byte, magic: 20 bytes."""

HINT_MAGIC = b"BKHINT01"

FLAG_TOMBSTONE = 0x01
_KNOWN_FLAGS = FLAG_TOMBSTONE


def encode_record(key: bytes, value: bytes, timestamp_ms: int, *, tombstone: bool = False) -> bytes:
    """Return the bytes of one data record; the caller has validated sizes already."""
    rest = _HEADER_REST.pack(FLAG_TOMBSTONE if tombstone else 0, timestamp_ms, len(key), len(value))
    return b"".join(
        (_CRC.pack(zlib.crc32(value, zlib.crc32(key, zlib.crc32(rest)))), rest, key, value)
    )


_HEADER_SIZE = HEADER.size
_unpack_header = HEADER.unpack_from


def record_value(record: bytes, key: bytes) -> bytes | None:
    """The value of ``record``, which must be exactly one live data record for ``key``.

    The read path's check, lean because it runs on every ``get``: ``None`` unless the bytes
    are one whole record (its lengths add up to ``len(record)``), of ``key``, not a tombstone,
    with no unknown flag, and its CRC matches. A damaged value is never returned.
    """
    if len(record) < _HEADER_SIZE:
        return None
    crc, flags, _, key_len, value_len = _unpack_header(record)
    if (
        flags
        or key_len != len(key)
        or _HEADER_SIZE + key_len + value_len != len(record)
        or not record.startswith(key, _HEADER_SIZE)
        or zlib.crc32(memoryview(record)[4:]) != crc
    ):
        return None
    return record[_HEADER_SIZE + key_len :]


class ScanStatus(enum.Enum):
    """Outcome of decoding the record that starts at a given offset."""

    OK = "ok"
    END = "end"  # the offset is exactly the end of the buffer
    TORN = "torn"  # the header or the body runs past the end of the buffer
    CORRUPT = "corrupt"  # everything fits but the checksum or the flags are wrong


@dataclass(frozen=True, slots=True)
class DecodedRecord:
    """One valid record found at ``offset``; ``size`` counts header, key and value."""

    offset: int
    size: int
    timestamp_ms: int
    tombstone: bool
    key: bytes
    value_offset: int
    value_len: int


def decode_record_at(
    buffer: bytes | memoryview, offset: int, *, key_len_max: int, value_len_max: int
) -> tuple[ScanStatus, DecodedRecord | None]:
    """Decode the record at ``offset`` in ``buffer`` without trusting any field before its CRC.

    Lengths above the given maxima can only come from damage (writers refuse them), so they
    count as corrupt rather than torn: a flipped high bit must not make us wait for bytes
    that will never come.
    """
    end = len(buffer)
    if offset == end:
        return ScanStatus.END, None
    if offset + HEADER.size > end:
        return ScanStatus.TORN, None
    crc, flags, timestamp_ms, key_len, value_len = HEADER.unpack_from(buffer, offset)
    if key_len > key_len_max or value_len > value_len_max or flags & ~_KNOWN_FLAGS:
        return ScanStatus.CORRUPT, None
    size = HEADER.size + key_len + value_len
    if offset + size > end:
        return ScanStatus.TORN, None
    body = memoryview(buffer)[offset + 4 : offset + size]
    if zlib.crc32(body) != crc:
        return ScanStatus.CORRUPT, None
    key_start = offset + HEADER.size
    key = bytes(buffer[key_start : key_start + key_len])
    return ScanStatus.OK, DecodedRecord(
        offset=offset,
        size=size,
        timestamp_ms=timestamp_ms,
        tombstone=bool(flags & FLAG_TOMBSTONE),
        key=key,
        value_offset=key_start + key_len,
        value_len=value_len,
    )


def scan_records(
    buffer: bytes | memoryview, *, key_len_max: int, value_len_max: int
) -> tuple[list[DecodedRecord], int, ScanStatus]:
    """Decode records from the start of ``buffer`` until the end or the first bad one.

    Returns the valid records, the offset just past the last valid one, and why the scan
    stopped (``END`` when the whole buffer was valid).
    """
    records: list[DecodedRecord] = []
    offset = 0
    while True:
        status, record = decode_record_at(
            buffer, offset, key_len_max=key_len_max, value_len_max=value_len_max
        )
        if record is None:
            return records, offset, status
        records.append(record)
        offset += record.size


@dataclass(frozen=True, slots=True)
class HintEntry:
    """Where the live record of ``key`` lives in the data file next to the hint file."""

    key: bytes
    offset: int
    record_size: int
    timestamp_ms: int


def encode_hint(entry: HintEntry) -> bytes:
    rest = HINT_HEADER.pack(
        0, 0, entry.timestamp_ms, len(entry.key), entry.record_size, entry.offset
    )[4:]
    crc = zlib.crc32(entry.key, zlib.crc32(rest))
    return b"".join((struct.pack("<I", crc), rest, entry.key))


def encode_hint_trailer(entry_count: int, body_crc: int) -> bytes:
    return HINT_TRAILER.pack(entry_count, body_crc, HINT_MAGIC)


def decode_hints(buffer: bytes, *, key_len_max: int) -> list[HintEntry] | None:
    """Decode a whole hint file; ``None`` when anything about it is off (then scan the data)."""
    if len(buffer) < HINT_TRAILER.size:
        return None
    body_end = len(buffer) - HINT_TRAILER.size
    entry_count, body_crc, magic = HINT_TRAILER.unpack_from(buffer, body_end)
    if magic != HINT_MAGIC or zlib.crc32(memoryview(buffer)[:body_end]) != body_crc:
        return None
    entries: list[HintEntry] = []
    offset = 0
    while offset < body_end:
        if offset + HINT_HEADER.size > body_end:
            return None
        _crc, flags, timestamp_ms, key_len, record_size, record_offset = HINT_HEADER.unpack_from(
            buffer, offset
        )
        end = offset + HINT_HEADER.size + key_len
        if flags != 0 or key_len > key_len_max or end > body_end:
            return None
        # The trailer's CRC already covered these bytes; the per-entry CRC is for tools that
        # read a hint file without its trailer, so it is not recomputed here.
        key = buffer[offset + HINT_HEADER.size : end]
        entries.append(HintEntry(key, record_offset, record_size, timestamp_ms))
        offset = end
    if len(entries) != entry_count:
        return None
    return entries
