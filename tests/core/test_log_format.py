"""The log's frame format, byte by byte, and the pure scanner over whole segments."""

from __future__ import annotations

import itertools
import struct

import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from blocks.core.log.format import (
    HEADER_BYTES,
    LENGTH_MAX,
    MAGIC,
    OFFSET_END,
    check_frame,
    encode_frame,
    encode_frames,
    find_next_frame,
    scan_frames,
)

records = st.lists(st.binary(max_size=40), max_size=12)


def test_frame_layout_byte_by_byte() -> None:
    frame = encode_frame(7, b"hello")
    body = struct.pack("<I", 5) + struct.pack("<Q", 7) + b"hello"
    expected = b"\xb1\x0c\x10\x67" + struct.pack("<Q", xxhash.xxh3_64_intdigest(body)) + body
    assert frame == expected
    assert len(frame) == HEADER_BYTES + 5 == 29
    assert frame[:4] == MAGIC
    assert check_frame(frame, 0, 7, 8, LENGTH_MAX) == (7, 5)


def test_empty_payload_is_a_valid_frame() -> None:
    frame = encode_frame(0, b"")
    assert len(frame) == HEADER_BYTES
    assert check_frame(frame, 0, 0, 1, 0) == (0, 0)


def test_every_flipped_byte_and_every_cut_is_caught() -> None:
    frame = encode_frame(3, b"payload bytes")
    for index in range(len(frame)):
        for bit in (0x01, 0x80):
            damaged = bytearray(frame)
            damaged[index] ^= bit
            assert check_frame(bytes(damaged), 0, 0, OFFSET_END, LENGTH_MAX) is None, index
    for cut in range(len(frame)):
        assert check_frame(frame[:cut], 0, 0, OFFSET_END, LENGTH_MAX) is None, cut


def test_trailing_data_does_not_spoil_a_frame() -> None:
    frame = encode_frame(1, b"abc")
    assert check_frame(frame + b"\x00garbage", 0, 1, 2, LENGTH_MAX) == (1, 3)


def test_offset_and_length_bounds_are_enforced() -> None:
    frame = encode_frame(5, b"abcd")
    assert check_frame(frame, 0, 6, 10, LENGTH_MAX) is None  # offset below the range
    assert check_frame(frame, 0, 0, 5, LENGTH_MAX) is None  # offset at the range's end
    assert check_frame(frame, 0, 5, 6, 3) is None  # longer than the limit
    assert check_frame(frame, -1, 5, 6, LENGTH_MAX) is None


def test_find_next_frame_skips_false_magic() -> None:
    buffer = MAGIC + b"noise" + MAGIC + encode_frame(9, b"x")
    position = len(MAGIC + b"noise" + MAGIC)
    assert find_next_frame(buffer, 0, 0, OFFSET_END, LENGTH_MAX) == (position, 9)
    assert find_next_frame(buffer, 0, 10, OFFSET_END, LENGTH_MAX) is None


@given(records, st.integers(0, 100))
def test_scan_of_whole_frames_indexes_every_record(payloads: list[bytes], base: int) -> None:
    buffer = encode_frames(base, payloads)
    scan = scan_frames(buffer, base, OFFSET_END, LENGTH_MAX, 1)
    assert scan.next_offset == base + len(payloads)
    assert scan.records == len(payloads)
    assert scan.valid_bytes == len(buffer) and scan.tail_bytes == 0 and scan.damaged == ()
    assert list(scan.index_offsets) == list(range(base, base + len(payloads)))


@given(records, st.data())
def test_scan_of_a_cut_buffer_keeps_exactly_the_whole_frames(
    payloads: list[bytes], data: st.DataObject
) -> None:
    buffer = encode_frames(0, payloads)
    cut = data.draw(st.integers(0, len(buffer)))
    ends = []
    end = 0
    for payload in payloads:
        end += HEADER_BYTES + len(payload)
        ends.append(end)
    whole = sum(1 for frame_end in ends if frame_end <= cut)
    scan = scan_frames(buffer[:cut], 0, OFFSET_END, LENGTH_MAX, 4096)
    assert scan.next_offset == whole
    assert scan.valid_bytes == (ends[whole - 1] if whole else 0)
    assert scan.tail_bytes == cut - scan.valid_bytes
    assert scan.damaged == ()


@given(st.lists(st.binary(max_size=30), min_size=2, max_size=10), st.data())
def test_scan_resynchronises_after_a_damaged_frame(
    payloads: list[bytes], data: st.DataObject
) -> None:
    frames = [encode_frame(index, payload) for index, payload in enumerate(payloads)]
    victim = data.draw(st.integers(0, len(payloads) - 1))
    byte = data.draw(st.integers(0, len(frames[victim]) - 1))
    damaged = bytearray(frames[victim])
    damaged[byte] ^= 0xFF
    frames[victim] = bytes(damaged)
    scan = scan_frames(b"".join(frames), 0, OFFSET_END, LENGTH_MAX, 64)
    if victim == len(payloads) - 1:  # nothing valid follows: a tail
        assert scan.next_offset == victim and scan.damaged == ()
        assert scan.tail_bytes == len(frames[victim])
    else:
        assert scan.damaged == ((victim, victim + 1),)
        assert scan.next_offset == len(payloads) and scan.tail_bytes == 0
        assert victim + 1 in scan.index_offsets  # an entry after each resynchronisation


@given(st.binary(max_size=300))
def test_scan_of_garbage_finds_no_records(garbage: bytes) -> None:
    scan = scan_frames(garbage, 0, OFFSET_END, LENGTH_MAX, 16)
    assert scan.records == 0 and scan.next_offset == 0 and scan.tail_bytes == len(garbage)


def test_scan_stops_at_the_offset_limit() -> None:
    buffer = encode_frames(10, [b"a", b"b", b"c"])
    scan = scan_frames(buffer, 10, 12, LENGTH_MAX, 16)
    assert scan.next_offset == 12
    assert scan.tail_bytes == HEADER_BYTES + 1


def test_sparse_index_spacing() -> None:
    payloads = [b"x" * 10] * 50  # 34-byte frames
    scan = scan_frames(encode_frames(0, payloads), 0, OFFSET_END, LENGTH_MAX, 100)
    positions = list(scan.index_positions)
    assert positions[0] == 0
    gaps = [b - a for a, b in itertools.pairwise(positions)]
    assert all(100 <= gap < 100 + 34 for gap in gaps)


@pytest.mark.parametrize("base", [0, 1, 2**40])
def test_first_frame_must_carry_the_base_offset(base: int) -> None:
    buffer = encode_frames(base + 1, [b"a"])
    scan = scan_frames(buffer, base, OFFSET_END, LENGTH_MAX, 16)
    assert scan.damaged == ((base, base + 1),)  # the base record is missing
    assert scan.next_offset == base + 2
