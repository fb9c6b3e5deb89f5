"""One partition of a topic: an append-only sequence of records with offsets.

Theory of operation
-------------------
A record is ``(offset, timestamp_ms, key, value, producer_id, sequence)``. Offsets are
assigned by the partition, start at 0 and only grow; timestamps are the broker's append time,
clamped so they never decrease within a partition, which makes "first offset at or after a
time" a binary search.

Two stores share one interface:

* ``MemoryPartition`` keeps records in a list (offsets may have gaps after compaction);
* ``LogPartition`` keeps them in a ``blocks.core.log.SegmentLog`` whose record offsets *are*
  the partition offsets, so a reopen finds every record that was durable.

Retention removes the oldest records by age (``retention_ms``) and by total size
(``retention_bytes``): the memory store record by record, the log store whole segments at a
time (so it keeps up to one segment more than asked). Compaction by key (``compact``) keeps
only the newest record of each key, without changing offsets: the memory store drops the
older records, the log store rewrites its sealed segments (``blocks.pubsub.segments``) with
each superseded record replaced by a *hollow* control record that keeps its offset,
timestamp and producer sequence but not its key or value.

*Control records* (``control=True``) hold no user data: a replicated partition writes one
when a new leader takes over (its epoch marker), compaction leaves hollow ones. Reads skip
them unless asked (``include_control``) and replicas copy them like any record. Each record
carries the leader ``epoch`` it was written in (0 on a single broker). ``truncate_after``
removes the tail from an offset on: a replica cuts a divergent tail with it.
Every read is bounded by ``max_messages`` and ``max_bytes``.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable
from typing import Protocol

from blocks.core.errors import InvalidArgument
from blocks.core.log import FsyncPolicy, GroupCommitter, SegmentLog
from blocks.pubsub.record import StoredRecord, newest_offsets
from blocks.pubsub.segments import compact_log, truncate_log_after

__all__ = ["LogPartition", "MemoryPartition", "PartitionStore", "StoredRecord"]


class PartitionStore(Protocol):
    """Storage of one partition; see the module docs."""

    @property
    def first_offset(self) -> int: ...

    @property
    def next_offset(self) -> int: ...

    def append(self, records: list[StoredRecord]) -> None:
        """Store records whose offsets continue ``next_offset``."""
        ...

    def read(
        self, offset: int, max_messages: int, max_bytes: int, *, include_control: bool = False
    ) -> list[StoredRecord]:
        """Records at or after ``offset`` (at least one if any, even above ``max_bytes``);
        control records only with ``include_control``."""
        ...

    def sync(self) -> None:
        """Make everything appended durable (no-op in memory)."""
        ...

    def truncate_before(self, offset: int) -> None: ...

    def truncate_after(self, offset: int) -> None:
        """Remove every record at ``offset`` or later; ``next_offset`` becomes ``offset``."""
        ...

    def restart_at(self, offset: int) -> None:
        """Drop every record and start empty at ``offset`` (a replica whose leader's log
        starts above this log's end)."""
        ...

    def compact(self, upto: int | None = None) -> int:
        """Keep only the newest record of each key, judged among the records below ``upto``
        (all if None: a replica passes its high watermark, so that a record is never dropped
        for a newer one that could still be truncated); return how many were removed."""
        ...

    def close(self) -> None: ...


class MemoryPartition:
    """Records in a Python list; offsets may have gaps after ``compact``."""

    def __init__(self) -> None:
        self._records: list[StoredRecord] = []
        self._offsets: list[int] = []
        self._next_offset = 0
        self._first_offset = 0

    @property
    def first_offset(self) -> int:
        return self._first_offset

    @property
    def next_offset(self) -> int:
        return self._next_offset

    def append(self, records: list[StoredRecord]) -> None:
        for record in records:
            assert record.offset == self._next_offset, "offsets are assigned densely"
            self._records.append(record)
            self._offsets.append(record.offset)
            self._next_offset += 1

    def read(
        self, offset: int, max_messages: int, max_bytes: int, *, include_control: bool = False
    ) -> list[StoredRecord]:
        start = bisect.bisect_left(self._offsets, offset)
        sized = ((r, len(r.value) + len(r.key or b"")) for r in self._records[start:])
        return _take(sized, max_messages, max_bytes, include_control)

    def sync(self) -> None:
        return None

    def truncate_before(self, offset: int) -> None:
        cut = bisect.bisect_left(self._offsets, offset)
        del self._records[:cut]
        del self._offsets[:cut]
        self._first_offset = max(self._first_offset, min(offset, self._next_offset))

    def restart_at(self, offset: int) -> None:
        self._records, self._offsets = [], []
        self._first_offset = self._next_offset = offset

    def truncate_after(self, offset: int) -> None:
        if offset >= self._next_offset:
            return
        cut = bisect.bisect_left(self._offsets, offset)
        del self._records[cut:]
        del self._offsets[cut:]
        self._next_offset = max(offset, self._first_offset)

    def compact(self, upto: int | None = None) -> int:
        """Keep only the newest record of each key (records without a key stay); return how
        many records were removed. Offsets do not change."""
        limit = self._next_offset if upto is None else upto
        newest = newest_offsets(r for r in self._records if r.offset < limit)
        kept = [r for r in self._records if r.key is None or newest.get(r.key, -1) <= r.offset]
        removed = len(self._records) - len(kept)
        self._records = kept
        self._offsets = [r.offset for r in kept]
        return removed

    def close(self) -> None:
        return None


class LogPartition:
    """Records in a ``SegmentLog``: log offset = partition offset."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        fsync: FsyncPolicy = "batch",
        segment_bytes_max: int = 16 << 20,
        batch_delay_ms: float = 0.0,
        commit_group: GroupCommitter | None = None,
    ) -> None:
        # Group commit without a window: the first durable append starts an fsync at once,
        # and every batch that arrives while it runs shares the next one. A broker's
        # partitions share one ``commit_group``, so one round fsyncs all of them.
        self.log = SegmentLog(
            directory,
            fsync=fsync,
            segment_bytes_max=segment_bytes_max,
            batch_delay_ms=batch_delay_ms,
            commit_group=commit_group,
        )

    @property
    def first_offset(self) -> int:
        return self.log.first_offset

    @property
    def next_offset(self) -> int:
        return self.log.next_offset

    def append(self, records: list[StoredRecord]) -> None:
        offsets = self.log.append_many([r.encode() for r in records])
        assert not records or offsets[0] == records[0].offset, "log and partition disagree"

    async def append_durable(self, records: list[StoredRecord]) -> None:
        """Append and return once durable (group commit under ``fsync="batch"``)."""
        offsets = await self.log.append_many_async([r.encode() for r in records])
        assert not records or offsets[0] == records[0].offset, "log and partition disagree"

    def read(
        self, offset: int, max_messages: int, max_bytes: int, *, include_control: bool = False
    ) -> list[StoredRecord]:
        offset = max(offset, self.log.first_offset)
        if offset >= self.log.next_offset:
            return []
        sized = (
            (StoredRecord.decode(p, data), len(data)) for p, data in self.log.iter_from(offset)
        )
        return _take(sized, max_messages, max_bytes, include_control)

    def sync(self) -> None:
        self.log.sync()

    def truncate_before(self, offset: int) -> None:
        self.log.truncate_before(min(offset, self.log.next_offset))

    def truncate_after(self, offset: int) -> None:
        if offset >= self.log.next_offset:
            return
        self.log = truncate_log_after(self.log, max(offset, self.log.first_offset), self._reopen)

    def restart_at(self, offset: int) -> None:
        """Delete every segment (a crash part way leaves a prefix or an empty log at 0: the
        replica is found behind again), then create an empty one based at ``offset``."""
        self.log.restart_at(offset)

    def compact(self, upto: int | None = None) -> int:
        """Rewrite sealed segments with superseded records made hollow (the active segment
        is left as it is); return how many records were made hollow."""
        limit = self.log.next_offset if upto is None else upto
        newest = newest_offsets(
            StoredRecord.decode(position, data)
            for position, data in self.log.iter_from(self.log.first_offset)
            if position < limit
        )

        def superseded(record: StoredRecord) -> bool:
            return (
                record.key is not None
                and not record.control
                and newest.get(record.key, -1) > record.offset
            )

        self.log, removed = compact_log(self.log, superseded, self._reopen)
        return removed

    def _reopen(self) -> SegmentLog:
        return SegmentLog(
            self.log.directory,
            fsync=self.log.config.fsync,
            segment_bytes_max=self.log.config.segment_bytes_max,
            batch_delay_ms=self.log.config.batch_delay_ms,
            commit_group=self.log.commit_group,
        )

    def close(self) -> None:
        self.log.close()


def first_offset_at(store: PartitionStore, timestamp_ms: int) -> int:
    """The first offset whose timestamp is >= ``timestamp_ms`` (``next_offset`` if none)."""
    if type(timestamp_ms) is not int:
        raise InvalidArgument("timestamp_ms must be an integer")
    low, high = store.first_offset, store.next_offset
    while low < high:
        middle = (low + high) // 2
        found = store.read(middle, 1, 1 << 30)
        if not found:
            return store.next_offset
        if found[0].timestamp_ms >= timestamp_ms:
            high = middle
        else:
            low = found[0].offset + 1
    return low


def _take(
    sized: Iterable[tuple[StoredRecord, int]],
    max_messages: int,
    max_bytes: int,
    include_control: bool,
) -> list[StoredRecord]:
    """What a read answers from ``(record, size)`` in offset order: control records only when
    asked, at most ``max_messages``, within ``max_bytes`` except that the first record is
    given whatever its size (so a large record never blocks a reader). Stops reading
    ``sized`` as soon as the answer is full."""
    out: list[StoredRecord] = []
    size = 0
    for record, record_bytes in sized:
        if record.control and not include_control:
            continue
        size += record_bytes
        if out and size > max_bytes:
            break
        out.append(record)
        if len(out) >= max_messages:
            break
    return out
