"""Recovery of ``blocks.core.log`` on open: scan every segment, rebuild indexes, cut torn tails.

Theory of operation
-------------------
Opening a log reads every byte of every segment once (through ``mmap``) and checks every
frame (see ``log.format``). The cost is linear in the size of the log: the disk's sequential
read speed for large records, roughly a million records a second of Python overhead for small
ones. What it buys: an index per segment without a separate index file that could disagree
with the data, and damage found at open rather than at some later read.

The policy for what the scan finds, segment by segment:

* **Last segment, bad bytes with no valid frame after them**: a torn tail (a crash during a
  write, or the unacknowledged end of a batch). The file is truncated to the end of the last
  valid frame, the truncation is made durable, and the report says how many bytes went. A
  damaged final record that had been acknowledged durable is indistinguishable from a torn
  write and is cut too; the warning in the log and ``RecoveryReport.truncated_bytes`` say so.
* **Any segment, bad frames followed by valid ones**: damage in the middle. The skipped offsets
  become a *damaged range*; the valid frames around it stay readable; reading an offset in
  the range raises ``Corruption``. Nothing is rewritten: the bytes stay for an operator.
* **Filler after the last valid frame**, in any segment: ``PAD_BYTE`` written ahead of the
  active segment's end (``log.storage``) by a process that did not close the log. It is cut
  off silently, as a clean close would have done. A write that never reached the disk there
  leaves filler too, and is cut the same way; a torn one leaves part of a frame and is
  reported as a torn tail.
* **An older segment that ends early** (cut, or missing records before the next segment's
  base): the missing offsets are a damaged range as well; stray bytes after its last valid
  frame are counted in ``ignored_bytes`` and left alone.

No policy ever returns a record whose checksum failed, and no offset is reused: offsets in a
damaged range stay damaged until retention deletes their segment.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
from dataclasses import dataclass, replace

from blocks.core.log.format import LENGTH_MAX, OFFSET_END, SegmentScan, scan_frames
from blocks.core.log.segment import Segment, segment_file_name
from blocks.core.log.storage import PAD_BYTE, StorageCounters, fsync_directory

__all__ = ["RecoveryReport", "list_segment_files", "open_segments", "recover_segments"]

_LOGGER = logging.getLogger("blocks.core.log")
_SEGMENT_NAME = re.compile(r"^(\d{20})\.log$")


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What opening the log found and did.

    ``truncated_bytes`` were cut from the end of the last segment (a torn tail);
    ``damaged`` lists ``[start, end)`` offset ranges that raise ``Corruption`` when read;
    ``ignored_bytes`` are stray bytes after the last valid frame of older segments.
    """

    segments: int
    records: int
    bytes_scanned: int
    truncated_bytes: int
    ignored_bytes: int
    damaged: tuple[tuple[int, int], ...]

    @property
    def clean(self) -> bool:
        """True when nothing was truncated, ignored or found damaged."""
        return not (self.truncated_bytes or self.ignored_bytes or self.damaged)


def list_segment_files(directory: str) -> list[tuple[int, str]]:
    """``(base_offset, path)`` of every segment file in ``directory``, by base offset."""
    found: list[tuple[int, str]] = []
    for name in os.listdir(directory):
        match = _SEGMENT_NAME.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(directory, name)))
    found.sort()
    return found


def _scan_file(
    path: str, base_offset: int, offset_limit: int, interval: int, durable: bool
) -> tuple[SegmentScan, int]:
    """Scan one file; also return how many bytes of filler follow its last frame."""
    with open(path, "rb") as file:
        if durable:  # what a crashed process left in the page cache becomes durable now
            os.fsync(file.fileno())
        size = os.fstat(file.fileno()).st_size
        if size == 0:
            return scan_frames(b"", base_offset, offset_limit, LENGTH_MAX, interval), 0
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            scan = scan_frames(mapped, base_offset, offset_limit, LENGTH_MAX, interval)
            if scan.tail_bytes and _all_padding(mapped, scan.valid_bytes):
                padding = scan.tail_bytes
                return replace(scan, tail_bytes=0), padding
            return scan, 0


def _all_padding(mapped: mmap.mmap, start: int) -> bool:
    """True when every byte from ``start`` to the end of the file is ``PAD_BYTE``."""
    step = 1 << 20
    for position in range(start, len(mapped), step):
        chunk = mapped[position : position + step]
        if chunk.count(PAD_BYTE) != len(chunk):
            return False
    return True


def _truncate(path: str, size: int, durable: bool) -> None:
    descriptor = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(descriptor, size)
        if durable:
            os.fsync(descriptor)
    finally:
        os.close(descriptor)


def recover_segments(
    files: list[tuple[int, str]], index_interval_bytes: int, durable: bool
) -> tuple[list[Segment], RecoveryReport]:
    """Scan ``files`` (from ``list_segment_files``, at least one) and apply the policy above.

    Truncates a torn tail of the last file in place. When ``durable``, fsyncs every file, so
    that all records found are durable when this returns.
    """
    assert files
    segments: list[Segment] = []
    damaged: list[tuple[int, int]] = []
    records = bytes_scanned = truncated = ignored = 0
    for number, (base_offset, path) in enumerate(files):
        is_last = number == len(files) - 1
        limit = OFFSET_END if is_last else files[number + 1][0]
        scan, padding = _scan_file(path, base_offset, limit, index_interval_bytes, durable)
        if padding:  # filler written ahead of the end (``log.storage``): not data, not damage
            _truncate(path, scan.valid_bytes, durable)
        records += scan.records
        bytes_scanned += scan.valid_bytes + scan.tail_bytes
        damaged.extend(scan.damaged)
        if is_last and scan.tail_bytes:
            _truncate(path, scan.valid_bytes, durable)
            truncated = scan.tail_bytes
            _LOGGER.warning(
                "log %s: cut a torn tail of %d bytes after offset %d",
                path,
                scan.tail_bytes,
                scan.next_offset,
            )
        elif not is_last:
            ignored += scan.tail_bytes
            if scan.next_offset < limit:
                damaged.append((scan.next_offset, limit))
        segments.append(Segment(path, scan, index_interval_bytes))
    report = RecoveryReport(
        segments=len(segments),
        records=records,
        bytes_scanned=bytes_scanned,
        truncated_bytes=truncated,
        ignored_bytes=ignored,
        damaged=tuple(damaged),
    )
    if damaged or ignored:
        _LOGGER.warning(
            "log %s: damaged offset ranges %s (reads raise Corruption), %d stray bytes",
            os.path.dirname(files[0][1]),
            list(damaged),
            ignored,
        )
    return segments, report


def open_segments(
    directory: str, index_interval_bytes: int, durable: bool, counters: StorageCounters
) -> tuple[list[Segment], RecoveryReport]:
    """Recover the segments of ``directory``, creating the first one in an empty log."""
    files = list_segment_files(directory)
    if not files:
        path = os.path.join(directory, segment_file_name(0))
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        if durable:
            fsync_directory(directory, counters)
        files = [(0, path)]
    return recover_segments(files, index_interval_bytes, durable)
