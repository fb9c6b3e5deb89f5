"""Changing a ``blocks.core.log`` in place: cutting its tail and rewriting a sealed segment.

Theory of operation
-------------------
Appends and retention (``truncate_before``) only add at the end and drop whole segments from
the front. Two rarer operations need more, and live here so that only the log touches its
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

``os.fsync`` and the rename are looked up at each call, so the power-loss disk of the
simulator sees them. The module keeps no state and raises ``OSError`` as the disk does;
``SegmentLog`` calls it under its lock and refuses further work after a failure.
"""

from __future__ import annotations

import os

from blocks.core.log_format import LENGTH_MAX, encode_frames, scan_frames
from blocks.core.log_segment import Segment
from blocks.core.log_storage import StorageCounters, fsync_directory

__all__ = ["REWRITE_SUFFIX", "cut_file", "delete_newest_first", "write_segment_file"]

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
