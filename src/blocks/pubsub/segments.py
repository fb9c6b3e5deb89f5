"""Cutting a partition's ``SegmentLog`` tail and compacting it, through the log's own methods.

Theory of operation
-------------------
A replica that must cut a divergent tail calls ``SegmentLog.truncate_from``; compaction thins
out old segments with ``SegmentLog.rewrite_segment``, which replaces a sealed segment's records
at the same offsets. The log does the file work (temporary file, fsync, rename, directory
fsync; see ``blocks.core.log.rewrite``), so a crash leaves every segment either old or new and
the log a prefix of itself; this module only decides which records to keep.

Compaction rewrites each sealed segment holding a superseded record, with that record replaced
by its hollow form, so offsets never change. The active segment is never rewritten.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from blocks.core.log import SegmentLog
from blocks.pubsub.record import StoredRecord

__all__ = ["compact_log", "truncate_log_after"]


def truncate_log_after(
    log: SegmentLog, offset: int, reopen: Callable[[], SegmentLog] | None = None
) -> SegmentLog:
    """Remove every record at ``offset`` or later; return the log (the same object: the
    log changes in place, and ``reopen`` is no longer needed)."""
    assert log.first_offset <= offset < log.next_offset, "caller checks the range"
    log.truncate_from(offset)
    return log


def compact_log(
    log: SegmentLog,
    superseded: Callable[[StoredRecord], bool],
    reopen: Callable[[], SegmentLog] | None = None,
) -> tuple[SegmentLog, int]:
    """Hollow out the superseded records of every sealed segment; return the log (changed in
    place, the same object) and how many records were hollowed."""
    hollowed = 0
    for base, next_base in itertools.pairwise(log.segment_bases):
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
            log.rewrite_segment(base, rewritten)
            hollowed += changed
    return log, hollowed
