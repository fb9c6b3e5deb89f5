"""Crash and corruption: cut files at any byte, flip any byte, reopen, and check what comes back.

The expected outcome is computed independently from the records written and the frame size
(24 bytes plus the payload), never from the log's own index.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blocks.core.errors import Corruption
from blocks.core.log import SegmentLog

FRAME_OVERHEAD = 24
SEGMENT_BYTES_MAX = 160
records_strategy = st.lists(st.binary(max_size=40), min_size=1, max_size=14)
fresh_directory = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


def write_log(directory: Path, records: list[bytes], sync_points: set[int]) -> int:
    """Append ``records`` one by one under ``never``, syncing after the indices in
    ``sync_points``; return the durable offset when the process "crashes"."""
    with SegmentLog(directory, fsync="never", segment_bytes_max=SEGMENT_BYTES_MAX) as log:
        for index, record in enumerate(records):
            log.append(record)
            if index in sync_points:
                log.sync()
        return log.durable_offset


def layout(directory: Path, records: list[bytes]) -> list[tuple[Path, int, list[int]]]:
    """For each segment file: its path, base offset and the end position of each record."""
    names = sorted(name for name in os.listdir(directory) if name.endswith(".log"))
    bases = [int(name[:20]) for name in names]
    result = []
    for number, name in enumerate(names):
        end_offset = bases[number + 1] if number + 1 < len(bases) else len(records)
        ends, position = [], 0
        for offset in range(bases[number], end_offset):
            position += FRAME_OVERHEAD + len(records[offset])
            ends.append(position)
        assert os.path.getsize(directory / name) == position
        result.append((directory / name, bases[number], ends))
    return result


def check_reads(log: SegmentLog, records: list[bytes], damaged: set[int]) -> None:
    for offset in range(log.first_offset, log.next_offset):
        if offset in damaged:
            with pytest.raises(Corruption):
                log.read(offset)
        else:
            assert log.read(offset) == records[offset]
    expected = []
    for offset in range(log.next_offset):
        if offset in damaged:
            break
        expected.append((offset, records[offset]))
    iterator = log.iter_from(0)
    assert [next(iterator) for _ in expected] == expected
    if len(expected) < log.next_offset:  # iteration stops with an error at the damage
        with pytest.raises(Corruption):
            next(iterator)
    else:
        assert list(iterator) == []


@fresh_directory
@given(records=records_strategy, data=st.data())
def test_cut_at_any_byte(
    tmp_path_factory: pytest.TempPathFactory, records: list[bytes], data: st.DataObject
) -> None:
    directory = tmp_path_factory.mktemp("cut")
    sync_points = set(data.draw(st.lists(st.integers(0, len(records) - 1), max_size=3)))
    durable = write_log(directory, records, sync_points)
    segments = layout(directory, records)
    number = data.draw(st.integers(0, len(segments) - 1))
    path, base, ends = segments[number]
    cut = data.draw(st.integers(0, ends[-1]))
    os.truncate(path, cut)
    whole = sum(1 for end in ends if end <= cut)
    kept_bytes = ends[whole - 1] if whole else 0
    is_last = number == len(segments) - 1
    with SegmentLog(directory, fsync="never", segment_bytes_max=SEGMENT_BYTES_MAX) as log:
        if is_last:
            assert log.next_offset == base + whole
            assert log.recovery.truncated_bytes == cut - kept_bytes
            assert log.recovery.damaged == ()
            check_reads(log, records, set())
            durable_ends = [end for offset, end in enumerate(ends, base) if offset < durable]
            if not durable_ends or cut >= durable_ends[-1]:  # a crash keeps what was fsynced
                assert log.next_offset >= durable
            assert log.append(b"after") == base + whole
        else:
            lost = set(range(base + whole, base + len(ends)))
            assert log.next_offset == len(records)
            assert log.recovery.damaged == (((min(lost), max(lost) + 1),) if lost else ())
            check_reads(log, records, lost)
            assert log.append(b"after") == len(records)


@fresh_directory
@given(records=records_strategy, data=st.data())
def test_flip_any_byte(
    tmp_path_factory: pytest.TempPathFactory, records: list[bytes], data: st.DataObject
) -> None:
    directory = tmp_path_factory.mktemp("flip")
    write_log(directory, records, set())
    segments = layout(directory, records)
    number = data.draw(st.integers(0, len(segments) - 1))
    path, base, ends = segments[number]
    position = data.draw(st.integers(0, ends[-1] - 1))
    bit = data.draw(st.sampled_from([0x01, 0x10, 0x80, 0xFF]))
    content = bytearray(path.read_bytes())
    content[position] ^= bit
    path.write_bytes(bytes(content))
    victim = base + sum(1 for end in ends if end <= position)
    with SegmentLog(directory, fsync="never", segment_bytes_max=SEGMENT_BYTES_MAX) as log:
        if victim == len(records) - 1:  # the very last record: a torn tail
            assert log.next_offset == victim
            assert log.recovery.truncated_bytes == FRAME_OVERHEAD + len(records[victim])
            check_reads(log, records, set())
        else:
            assert log.next_offset == len(records)
            assert log.recovery.damaged == ((victim, victim + 1),)
            check_reads(log, records, {victim})


def test_garbage_tail_is_cut_and_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with SegmentLog(tmp_path) as log:
        log.append_many([b"a", b"b"])
    path = tmp_path / f"{0:020d}.log"
    with open(path, "ab") as file:
        file.write(b"\x00" * 100)  # a size update that outran its data
    with caplog.at_level(logging.WARNING, logger="blocks.core.log"):
        log = SegmentLog(tmp_path)
    try:
        assert log.recovery.truncated_bytes == 100 and not log.recovery.clean
        assert "torn tail" in caplog.text
        assert os.path.getsize(path) == 2 * (FRAME_OVERHEAD + 1)
        assert log.append(b"c") == 2
    finally:
        log.close()
    with SegmentLog(tmp_path) as log:
        assert log.recovery.clean
        assert list(log.iter_from(0)) == [(0, b"a"), (1, b"b"), (2, b"c")]


def test_a_missing_middle_segment_is_a_damaged_range(tmp_path: Path) -> None:
    with SegmentLog(tmp_path, segment_bytes_max=2 * (FRAME_OVERHEAD + 1)) as log:
        log.append_many([b"r"] * 6)  # segments at 0, 2, 4
    os.unlink(tmp_path / f"{2:020d}.log")
    with SegmentLog(tmp_path, segment_bytes_max=2 * (FRAME_OVERHEAD + 1)) as log:
        assert log.recovery.damaged == ((2, 4),)
        for offset in (2, 3):
            with pytest.raises(Corruption):
                log.read(offset)
        assert [log.read(offset) for offset in (0, 1, 4, 5)] == [b"r"] * 4
        assert log.truncate_before(4) == 4  # retention drops the damage with its segments
        assert list(log.iter_from(4)) == [(4, b"r"), (5, b"r")]


def test_damage_in_the_last_segment_keeps_later_records_and_offsets(tmp_path: Path) -> None:
    with SegmentLog(tmp_path) as log:
        log.append_many([b"one", b"two", b"three"])
    path = tmp_path / f"{0:020d}.log"
    content = bytearray(path.read_bytes())
    content[FRAME_OVERHEAD + 3 + 5] ^= 0x40  # the checksum of record 1
    path.write_bytes(bytes(content))
    with SegmentLog(tmp_path) as log:
        assert log.recovery.damaged == ((1, 2),)
        assert log.append(b"four") == 4 - 1  # offsets go on after the valid record 2
        assert log.read(2) == b"three" and log.read(3) == b"four"
        with pytest.raises(Corruption):
            log.read(1)
