"""``LocalBroker``: the in-process pub-sub broker, durable on ``blocks.core.log`` when given
a directory.

Theory of operation
-------------------
A thin asyncio driver over ``TopicTable`` (partitions, producers) and ``GroupCoordinator``
(groups, commits). A produce checks and writes its batch in one event-loop step (so offsets
are assigned in write order), then waits for durability (group commit under
``fsync="batch"``), then replies. Commits go to an offsets ``SegmentLog`` that is replayed on
open, so committed offsets survive a restart. Fetch long-polls: a fetch that finds nothing
waits on the partition's waiters until a produce to it, or until ``wait_ms``.

Time comes from the injected ``Clock`` (record timestamps, heartbeats, retention). Nothing
here grows without bound: waiters, batch sizes, topics, groups and producers all have limits
that raise ``Overloaded`` or ``InvalidArgument``.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

from blocks.core.clock import Clock, SystemClock
from blocks.core.codec import pack, unpack
from blocks.core.errors import FailedPrecondition, InvalidArgument
from blocks.core.hashing import key_hash
from blocks.core.log import FsyncPolicy, SegmentLog
from blocks.core.long_polls import WAITERS_MAX, LongPolls
from blocks.pubsub.api import Assignment, Record
from blocks.pubsub.calls import PubSubCalls
from blocks.pubsub.consumer import Consumer
from blocks.pubsub.groups import GroupCoordinator
from blocks.pubsub.partition import LogPartition, StoredRecord, first_offset_at
from blocks.pubsub.topics import (
    TopicConfig,
    TopicTable,
    check_fetch,
    check_topic,
)

__all__ = ["LocalBroker"]

FETCH_MAX_BYTES = 8 << 20


class LocalBroker(PubSubCalls):
    """An in-process ``PubSub``; durable when ``directory`` is given."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        clock: Clock | None = None,
        fsync: FsyncPolicy = "batch",
        session_timeout_ms: int = 10_000,
        segment_bytes_max: int = 16 << 20,
    ) -> None:
        self._clock: Clock = clock if clock is not None else SystemClock()
        self.topics = TopicTable(directory, fsync=fsync, segment_bytes_max=segment_bytes_max)
        self.groups = GroupCoordinator(session_timeout_ms)
        self._offsets_log: SegmentLog | None = None
        if directory is not None:
            self._offsets_log = SegmentLog(Path(directory) / "offsets", fsync=fsync)
            for _, data in self._offsets_log.iter_from(self._offsets_log.first_offset):
                group, topic, partition, offset = unpack(data)
                self.groups.restore_commit(group, topic, partition, offset)
        self._long_polls: LongPolls[tuple[str, int]] = LongPolls(WAITERS_MAX)
        self._round_robin = itertools.count()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise FailedPrecondition("broker is closed")

    # -- topics ------------------------------------------------------------------------------

    async def _create_topic(self, config: TopicConfig) -> None:
        """Create the topic ``config`` describes (a replicated broker tells its peers too)."""
        self._check_open()
        self.topics.create(config)

    async def delete_topic(self, name: str) -> None:
        self._check_open()
        self.topics.delete(name)

    async def partitions(self, topic: str) -> int:
        return self.topics.topic(topic).config.partitions

    # -- producing ---------------------------------------------------------------------------

    def choose_partition(self, topic: str, key: bytes | None) -> int:
        count = self.topics.topic(topic).config.partitions
        if key is None:
            return next(self._round_robin) % count
        return key_hash(key) % count

    async def produce(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> tuple[int, int]:
        if partition is None:
            partition = self.choose_partition(topic, key)
        return partition, await self.produce_batch(topic, partition, [(key, value)])

    async def produce_batch(
        self,
        topic: str,
        partition: int,
        entries: list[tuple[bytes | None, bytes]],
        *,
        producer_id: str | None = None,
        sequence: int = 0,
    ) -> int:
        """Append a batch; with ``producer_id``, a retried batch is written only once."""
        self._check_open()
        records, base = self.topics.prepare_append(
            topic, partition, entries, self._clock.now_ms(), producer_id, sequence
        )
        if records:
            await self.topics.write(topic, partition, records)
            self._wake((topic, partition))
        else:  # a duplicate: make sure the original is durable before confirming it again
            store = self.topics.store(topic, partition)
            if (
                isinstance(store, LogPartition)
                and store.log.durable_offset < base + len(entries) <= store.next_offset
            ):
                store.sync()
        return base

    # -- consuming ---------------------------------------------------------------------------

    async def _fetch(
        self, topic: str, partition: int, offset: int, max_messages: int, wait_ms: int
    ) -> list[Record]:
        self._check_open()
        store = self.topics.store(topic, partition)
        check_fetch(offset, max_messages, wait_ms)
        found = store.read(offset, max_messages, FETCH_MAX_BYTES)
        if not found and wait_ms > 0:
            await self._long_polls.wait((topic, partition), wait_ms / 1000.0)
            found = store.read(offset, max_messages, FETCH_MAX_BYTES)
        return [_record(topic, partition, r) for r in found]

    def _wake(self, key: tuple[str, int]) -> None:
        self._long_polls.wake(key)

    async def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int:
        return first_offset_at(self.topics.store(topic, partition), timestamp_ms)

    async def end_offsets(self, topic: str, partition: int) -> tuple[int, int]:
        store = self.topics.store(topic, partition)
        return store.first_offset, store.next_offset

    # -- groups ------------------------------------------------------------------------------

    async def join_group(self, group: str, topic: str, member: str) -> Assignment:
        self._check_open()
        _check_label(group, "group")
        _check_label(member, "member")
        partitions = self.topics.topic(topic).config.partitions
        return self.groups.join(group, topic, partitions, member, self._clock.now_ms())

    async def heartbeat(self, group: str, member: str) -> Assignment:
        return self.groups.heartbeat(group, member, self._clock.now_ms())

    async def leave_group(self, group: str, member: str) -> None:
        self.groups.leave(group, member, self._clock.now_ms())

    async def commit(
        self, group: str, member: str, generation: int, partition: int, offset: int
    ) -> int:
        self._check_open()
        self.groups.expire(self._clock.now_ms())
        topic = self.groups.topic_of(group)
        if topic is not None:
            _, next_offset = await self.end_offsets(topic, partition)
            if type(offset) is not int or offset > next_offset:
                raise InvalidArgument(f"offset {offset!r} is past the end ({next_offset})")
        stored = self.groups.commit(group, member, generation, partition, offset)
        if self._offsets_log is not None and topic is not None:
            await self._offsets_log.append_async(pack([group, topic, partition, stored]))
        return stored

    async def committed(self, group: str, topic: str, partition: int) -> int | None:
        return self.groups.committed(group, check_topic(topic), partition)

    def consumer(self, topic: str, group: str, **options: Any) -> Consumer:
        return Consumer(self, topic, group, clock=options.pop("clock", self._clock), **options)

    # -- maintenance -------------------------------------------------------------------------

    def apply_retention(self) -> int:
        """Apply every topic's retention now; return how many partitions were trimmed."""
        return self.topics.apply_retention(self._clock.now_ms())

    def compact(self, topic: str) -> int:
        """Compact a ``compact=True`` topic by key; return records removed (on disk: made
        hollow). Call it between writes: a durable store closes and reopens its log."""
        self._check_open()
        table = self.topics.topic(topic)
        if not table.config.compact:
            raise FailedPrecondition(f"topic {topic!r} was not created with compact=True")
        removed = 0
        for partition, store in enumerate(table.stores):
            removed += store.compact(self.compaction_limit(topic, partition))
        return removed

    def compaction_limit(self, topic: str, partition: int) -> int | None:
        """Records at or past this offset do not supersede older ones in ``compact`` (None:
        every record counts; a replicated broker returns its high watermark)."""
        return None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._long_polls.wake_all()
        self.topics.close()
        if self._offsets_log is not None:
            self._offsets_log.close()


def _record(topic: str, partition: int, stored: StoredRecord) -> Record:
    return Record(topic, partition, stored.offset, stored.key, stored.value, stored.timestamp_ms)


def _check_label(value: object, what: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 128:
        raise InvalidArgument(f"{what} must be a string of 1..128 characters")
    return value
