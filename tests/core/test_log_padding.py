"""Filler written ahead of the active segment's end (``blocks.core.log.storage``).

Appends inside the filler do not grow the file, which is what makes their fdatasync cheap;
a clean close or a roll cuts the filler off; a process killed with its log open leaves it,
and reopening cuts it silently while a torn frame inside it is still reported.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from blocks.core.log import SegmentLog
from blocks.core.log.format import encode_frame
from blocks.core.log.storage import PAD_BYTE

PADDING = 4096
FRAME_OVERHEAD = 24


def segment_path(directory: Path, base: int = 0) -> Path:
    return directory / f"{base:020d}.log"


def test_appends_inside_the_filler_leave_the_file_size_alone(tmp_path: Path) -> None:
    with SegmentLog(tmp_path, padding_bytes=PADDING) as log:
        log.append(b"x" * 100)
        first = FRAME_OVERHEAD + 100
        assert os.path.getsize(segment_path(tmp_path)) == first + PADDING
        for _ in range(20):
            log.append(b"y" * 100)
        assert os.path.getsize(segment_path(tmp_path)) == first + PADDING
        log.append_many([b"z" * 1000] * 4)  # passes the filler's end: grows by another pad
        logical = first + 20 * (FRAME_OVERHEAD + 100) + 4 * (FRAME_OVERHEAD + 1000)
        assert os.path.getsize(segment_path(tmp_path)) == logical + PADDING
        assert log.read(21) == b"z" * 1000
    assert os.path.getsize(segment_path(tmp_path)) == logical  # close cut the filler off


def test_padding_never_passes_the_segment_limit_and_a_roll_cuts_it(tmp_path: Path) -> None:
    with SegmentLog(tmp_path, padding_bytes=PADDING, segment_bytes_max=1000) as log:
        log.append(b"a" * 100)
        assert os.path.getsize(segment_path(tmp_path)) == 1000
        for _ in range(9):
            log.append(b"a" * 100)
        bases = log.segment_bases
        assert len(bases) > 1
        sealed = [os.path.getsize(segment_path(tmp_path, base)) for base in bases[:-1]]
        assert all(size % (FRAME_OVERHEAD + 100) == 0 for size in sealed)


def test_zero_padding_turns_it_off(tmp_path: Path) -> None:
    with SegmentLog(tmp_path, padding_bytes=0) as log:
        log.append(b"q" * 10)
        assert os.path.getsize(segment_path(tmp_path)) == FRAME_OVERHEAD + 10


_KILLED_WRITER = """
import os, sys
from blocks.core.log import SegmentLog
log = SegmentLog(sys.argv[1], padding_bytes=int(sys.argv[2]))
for index in range(50):
    log.append(b"record %d" % index)
os._exit(0)  # no close: the filler stays, as after kill -9
"""


def killed_writer(directory: Path) -> None:
    subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(directory), str(PADDING)],
        check=True,
        timeout=60,
    )


def test_a_killed_writer_leaves_filler_that_reopening_cuts_silently(tmp_path: Path) -> None:
    killed_writer(tmp_path)
    path = segment_path(tmp_path)
    size = os.path.getsize(path)
    logical = sum(FRAME_OVERHEAD + len(b"record %d" % index) for index in range(50))
    assert size > logical and path.read_bytes()[logical:].count(PAD_BYTE) == size - logical
    with SegmentLog(tmp_path, padding_bytes=PADDING) as log:
        assert log.recovery.clean, log.recovery
        assert [log.read(index) for index in range(50)] == [b"record %d" % i for i in range(50)]
        assert os.path.getsize(path) == logical  # cut on open
        log.append(b"after")
        assert log.read(50) == b"after"


def test_a_torn_frame_inside_the_filler_is_still_a_torn_tail(tmp_path: Path) -> None:
    killed_writer(tmp_path)
    logical = sum(FRAME_OVERHEAD + len(b"record %d" % index) for index in range(50))
    torn = encode_frame(50, b"never acknowledged")[:30]
    with open(segment_path(tmp_path), "r+b") as file:
        file.seek(logical)
        file.write(torn)
        tail = os.path.getsize(segment_path(tmp_path)) - logical
    with SegmentLog(tmp_path) as log:
        assert log.recovery.truncated_bytes == tail and not log.recovery.clean
        assert log.next_offset == 50 and log.read(49) == b"record 49"


def test_a_disk_that_refuses_the_filler_still_takes_the_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_pwrite = os.pwrite

    def full_for_filler(descriptor: int, data: bytes, position: int) -> int:
        if len(data) > 64 and bytes(data[:64]) == bytes((PAD_BYTE,)) * 64:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(descriptor, data, position)

    monkeypatch.setattr(os, "pwrite", full_for_filler)
    with SegmentLog(tmp_path, padding_bytes=PADDING) as log:
        for index in range(5):
            assert log.append(b"v%d" % index) == index
        assert os.path.getsize(segment_path(tmp_path)) == 5 * (FRAME_OVERHEAD + 2)
        assert log.durable_offset == 5
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path, copy, ignore=shutil.ignore_patterns("copy"))
    with SegmentLog(copy) as log:
        assert log.recovery.clean and [log.read(i) for i in range(5)] == [
            b"v0",
            b"v1",
            b"v2",
            b"v3",
            b"v4",
        ]
