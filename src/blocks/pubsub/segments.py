"""Rewriting a partition's ``SegmentLog`` in place: tail truncation and compaction.

Theory of operation
-------------------
``SegmentLog`` only appends and drops whole segments from the front. A replica that must cut a
divergent tail, and compaction that must thin out old segments, both need more; both are done
here by *replacing whole segment files*, one at a time, each replacement atomic:

1. the new content of the segment with base offset ``b`` is written as a fresh log in a
   scratch directory beside the log (seeded with an empty segment file named ``b``, so its
   offsets start at ``b``), fsynced and closed;
2. ``os.replace`` swaps it over the old file, and the directory is fsynced.

A crash leaves every segment either old or new, never half written (the scratch directory is
removed on the next rewrite). Segments are rewritten only while the log is closed, and the log
is reopened afterwards, which rescans it (linear in its size: these are rare operations).

Truncation after ``x`` deletes the segments wholly at or above ``x`` (newest first, so the log
stays a valid prefix at each step) and rewrites the one that contains ``x`` with its records
below ``x``. Compaction rewrites each sealed segment holding a superseded record, with that
record replaced by its hollow form, so offsets never change.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable

from blocks.core.files import fsync_directory
from blocks.core.log import SegmentLog
from blocks.core.log_recovery import list_segment_files
from blocks.core.log_segment import segment_file_name
from blocks.pubsub.record import StoredRecord

__all__ = ["compact_log", "rewrite_segment", "truncate_log_after"]

SCRATCH_SUFFIX = ".rewrite"


def rewrite_segment(directory: str, base_offset: int, records: list[bytes]) -> None:
    """Atomically replace the segment file ``base_offset`` of the closed log in ``directory``
    by one holding ``records`` at offsets ``base_offset, base_offset + 1, ...``."""
    scratch = directory.rstrip("/") + SCRATCH_SUFFIX
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch)
    name = segment_file_name(base_offset)
    open(os.path.join(scratch, name), "wb").close()
    size = sum(len(r) for r in records) + 64 * (len(records) + 1)
    log = SegmentLog(scratch, fsync="always", segment_bytes_max=max(size, 1 << 16))
    try:
        log.append_many(records)
    finally:
        log.close()
    os.replace(os.path.join(scratch, name), os.path.join(directory, name))
    fsync_directory(directory)
    shutil.rmtree(scratch, ignore_errors=True)


def truncate_log_after(
    log: SegmentLog, offset: int, reopen: Callable[[], SegmentLog]
) -> SegmentLog:
    """Remove every record at ``offset`` or later; return the reopened log."""
    assert log.first_offset <= offset < log.next_offset, "caller checks the range"
    directory = log.directory
    bases = [base for base, _ in list_segment_files(directory)]
    base = max(b for b in bases if b <= offset)
    kept = [data for position, data in log.iter_from(base) if position < offset]
    log.sync()
    log.close()
    for later, path in reversed(list_segment_files(directory)):
        if later > base:
            os.unlink(path)
    fsync_directory(directory)
    rewrite_segment(directory, base, kept)
    return reopen()


def compact_log(
    log: SegmentLog,
    superseded: Callable[[StoredRecord], bool],
    reopen: Callable[[], SegmentLog],
) -> tuple[SegmentLog, int]:
    """Hollow out the superseded records of every sealed segment; return the reopened log
    and how many records were hollowed."""
    directory = log.directory
    segments = list_segment_files(directory)
    plans: list[tuple[int, list[bytes]]] = []
    hollowed = 0
    for (base, _), (next_base, _) in itertools.pairwise(segments):
        rewritten: list[bytes] = []
        changed = 0
        for position, data in log.iter_from(max(base, log.first_offset)):
            if position >= next_base:
                break
            record = StoredRecord.decode(position, data)
            if superseded(record):
                data = record.hollow().encode()
                changed += 1
            rewritten.append(data)
        if changed:
            plans.append((base, rewritten))
            hollowed += changed
    if not plans:
        return log, 0
    log.sync()
    log.close()
    for base, records in plans:
        rewrite_segment(directory, base, records)
    return reopen(), hollowed
