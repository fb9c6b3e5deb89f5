"""Topics, partitions and the idempotent-producer table: the broker's synchronous core.

Theory of operation
-------------------
``TopicTable`` owns every topic's partition stores (memory or ``SegmentLog`` directories under
``<data>/topics/<topic>/<partition>``) and assigns offsets. ``prepare_append`` checks a batch
and decides, from the producer table, whether it is new, a duplicate of a batch already
written (a retry: its original offsets are returned and nothing is written) or out of order
(``Conflict``). Producer state is ``(producer_id, topic, partition) -> recent runs``
(``blocks.pubsub.producer_runs``: enough to answer a retry of any of a pipelining producer's
batches in flight); it is rebuilt on open by scanning the retained records, which carry the
producer id and sequence, so deduplication survives a restart for as long as retention keeps
the batch.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from blocks.core.codec import pack, unpack
from blocks.core.errors import (
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from blocks.core.files import make_directories, write_atomically
from blocks.core.log import FsyncPolicy, GroupCommitter
from blocks.pubsub.partition import LogPartition, MemoryPartition, PartitionStore, StoredRecord
from blocks.pubsub.producer_runs import Run, duplicate_offset, extend, last_sequence

__all__ = ["TopicConfig", "TopicTable", "WriteWatcher"]

TOPICS_MAX = 1000
PARTITIONS_MAX = 256
VALUE_BYTES_MAX = 1 << 20
BATCH_RECORDS_MAX = 10_000
PRODUCERS_MAX = 100_000
FETCH_MAX_MESSAGES = 10_000  # records in one fetch answer
WAIT_MS_MAX = 60_000  # the longest long poll of one fetch


def check_topic(name: object) -> str:
    if (
        not isinstance(name, str)
        or not 1 <= len(name) <= 100
        or not all(c.isalnum() or c in "._-" for c in name)
    ):
        raise InvalidArgument(f"a topic name is 1..100 of [A-Za-z0-9._-], got {name!r}")
    return name


class WriteWatcher(Protocol):
    """Told of every change to a partition's records (``TopicTable.watcher``), so that a
    block built on the table can keep what it has just written: the replicated queue applies
    its own writes from them instead of reading them back from the log."""

    def writing(self, name: str, partition: int, records: list[StoredRecord]) -> None:
        """``records`` are about to be written (before the fsync: a commit may come during it)."""

    def cut(self, name: str, partition: int) -> None:
        """The partition's records changed other than by appending (truncated, restarted, or
        a write failed): forget what was noted of it."""


@dataclass(frozen=True, slots=True)
class TopicConfig:
    name: str
    partitions: int = 1
    retention_ms: int | None = None
    retention_bytes: int | None = None
    compact: bool = False

    def __post_init__(self) -> None:
        check_topic(self.name)
        if type(self.partitions) is not int or not 1 <= self.partitions <= PARTITIONS_MAX:
            raise InvalidArgument(f"partitions must be within 1..{PARTITIONS_MAX}")
        for label in ("retention_ms", "retention_bytes"):
            value = getattr(self, label)
            if value is not None and (type(value) is not int or value <= 0):
                raise InvalidArgument(f"{label} must be a positive integer or None")


@dataclass(slots=True)
class _Topic:
    config: TopicConfig
    stores: list[PartitionStore]
    last_timestamp_ms: list[int]


class TopicTable:
    """Topics by name with their partition stores; durable under ``directory``."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        fsync: FsyncPolicy = "batch",
        segment_bytes_max: int = 16 << 20,
        batch_delay_ms: float = 0.0,
    ) -> None:
        self.directory = None if directory is None else Path(directory) / "topics"
        self._fsync: FsyncPolicy = fsync
        self._segment_bytes_max = segment_bytes_max
        self._topics: dict[str, _Topic] = {}
        self._producers: dict[tuple[str, str, int], tuple[Run, ...]] = {}
        self.watcher: WriteWatcher | None = None
        self._batch_delay_ms = batch_delay_ms
        self._commit_group = GroupCommitter(batch_delay_ms)  # one fsync round for all partitions
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            for meta in sorted(self.directory.glob("*/topic.msgpack")):
                self._open(TopicConfig(**unpack(meta.read_bytes())))

    def _open(self, config: TopicConfig) -> _Topic:
        stores: list[PartitionStore] = []
        for partition in range(config.partitions):
            if self.directory is None:
                stores.append(MemoryPartition())
            else:
                path = self.directory / config.name / str(partition)
                stores.append(
                    LogPartition(
                        path,
                        fsync=self._fsync,
                        segment_bytes_max=self._segment_bytes_max,
                        batch_delay_ms=self._batch_delay_ms,
                        commit_group=self._commit_group,
                    )
                )
        topic = _Topic(config, stores, [0] * config.partitions)
        self._topics[config.name] = topic
        for partition in range(config.partitions):
            self._scan(topic, partition)
        return topic

    def _scan(self, topic: _Topic, partition: int) -> None:
        """Rebuild a partition's producer entries and last timestamp from its records."""
        name = topic.config.name
        self._producers = {
            k: v for k, v in self._producers.items() if k[1] != name or k[2] != partition
        }
        topic.last_timestamp_ms[partition] = 0
        store = topic.stores[partition]
        offset = store.first_offset
        while batch := store.read(offset, 1000, 1 << 24, include_control=True):
            topic.last_timestamp_ms[partition] = batch[-1].timestamp_ms
            self._note_producers(name, partition, batch)
            offset = batch[-1].offset + 1

    def create(self, config: TopicConfig) -> None:
        existing = self._topics.get(config.name)
        if existing is not None:
            if existing.config == config:
                return
            raise AlreadyExists(f"topic {config.name!r} exists with another configuration")
        if len(self._topics) >= TOPICS_MAX:
            raise FailedPrecondition(f"at most {TOPICS_MAX} topics")
        if self.directory is not None:
            make_directories(self.directory / config.name)
            write_atomically(self.directory / config.name / "topic.msgpack", pack(asdict(config)))
        self._open(config)

    def delete(self, name: str) -> None:
        topic = self.topic(name)
        for store in topic.stores:
            store.close()
        del self._topics[name]
        self._producers = {k: v for k, v in self._producers.items() if k[1] != name}
        if self.directory is not None:
            shutil.rmtree(self.directory / name, ignore_errors=True)

    def topic(self, name: str) -> _Topic:
        # A name held here was checked when its topic was made: check only the others.
        topic = self._topics.get(name) if type(name) is str else None
        if topic is None:
            raise NotFound(f"no topic named {check_topic(name)!r}")
        return topic

    def store(self, name: str, partition: int) -> PartitionStore:
        topic = self.topic(name)
        if type(partition) is not int or not 0 <= partition < topic.config.partitions:
            raise InvalidArgument(
                f"partition must be within 0..{topic.config.partitions - 1}, got {partition!r}"
            )
        return topic.stores[partition]

    def names(self) -> list[str]:
        return sorted(self._topics)

    def prepare_append(
        self,
        name: str,
        partition: int,
        entries: list[tuple[bytes | None, bytes]],
        now_ms: int,
        producer_id: str | None,
        sequence: int,
        epoch: int = 0,
    ) -> tuple[list[StoredRecord], int]:
        """Records to write and the batch's base offset; ``([], base)`` for a duplicate."""
        store = self.store(name, partition)
        check_entries(entries)
        if producer_id is not None:
            if not isinstance(producer_id, str) or not 1 <= len(producer_id) <= 64:
                raise InvalidArgument("producer_id must be a string of 1..64 characters")
            if type(sequence) is not int or sequence < 0:
                raise InvalidArgument("sequence must be a non-negative integer")
            runs = self._producers.get((producer_id, name, partition), ())
            newest = last_sequence(runs)
            if sequence + len(entries) - 1 <= newest:  # a retry of a batch already written
                original = duplicate_offset(runs, sequence, len(entries))
                if original is None:
                    raise Conflict(f"sequence {sequence} is too old to deduplicate")
                return [], original
            if sequence != newest + 1:
                raise Conflict(f"sequence {sequence} out of order (expected {newest + 1})")
            if len(self._producers) >= PRODUCERS_MAX:
                raise FailedPrecondition(f"at most {PRODUCERS_MAX} producer sessions")
        topic = self._topics[name]
        timestamp_ms = max(now_ms, topic.last_timestamp_ms[partition])
        base = store.next_offset
        records = [
            StoredRecord(
                base + i,
                timestamp_ms,
                key,
                value,
                producer_id,
                -1 if producer_id is None else sequence + i,
                epoch,
            )
            for i, (key, value) in enumerate(entries)
        ]
        return records, base

    async def write(
        self, name: str, partition: int, records: list[StoredRecord], *, inline_sync: bool = False
    ) -> None:
        """Write prepared records and return once durable (``inline_sync``: fsynced on the
        calling thread, under the log's policy, without suspending).

        The producer table is updated before the first suspension so that a retry arriving
        while this write waits for its fsync is recognised as a duplicate; it is rolled back
        if the write itself fails.
        """
        if not records:
            return
        store = self._topics[name].stores[partition]
        key = (records[-1].producer_id or "", name, partition)
        previous = (self._producers.get(key), self._topics[name].last_timestamp_ms[partition])
        self._note(name, partition, records)
        if self.watcher is not None:
            self.watcher.writing(name, partition, records)
        try:
            if isinstance(store, LogPartition) and not inline_sync:
                await store.append_durable(records)
            else:
                store.append(records)
                if isinstance(store, LogPartition) and self._fsync != "never":
                    store.sync()  # a no-op where the append synced already
        except BaseException:
            if self.watcher is not None:
                self.watcher.cut(name, partition)
            if store.next_offset == records[0].offset:  # nothing was written
                self._topics[name].last_timestamp_ms[partition] = previous[1]
                if previous[0] is None:
                    self._producers.pop(key, None)
                else:
                    self._producers[key] = previous[0]
            raise

    def truncate_after(self, name: str, partition: int, offset: int) -> None:
        """Cut a partition's records at ``offset`` and later (a replica's divergent tail),
        forgetting the producer sequences they carried."""
        topic = self.topic(name)
        if self.watcher is not None:
            self.watcher.cut(name, partition)
        topic.stores[partition].truncate_after(offset)
        self._scan(topic, partition)

    def restart_at(self, name: str, partition: int, offset: int) -> None:
        """Drop a partition's records and start it empty at ``offset`` (a replica below its
        leader's log start)."""
        topic = self.topic(name)
        if self.watcher is not None:
            self.watcher.cut(name, partition)
        topic.stores[partition].restart_at(offset)
        self._scan(topic, partition)

    def _note(self, name: str, partition: int, records: list[StoredRecord]) -> None:
        self._topics[name].last_timestamp_ms[partition] = records[-1].timestamp_ms
        self._note_producers(name, partition, records)

    def _note_producers(self, name: str, partition: int, records: list[StoredRecord]) -> None:
        """Extend the producers' runs with stored records (in offset order)."""
        first, last = records[0], records[-1]
        span = len(records) - 1
        if (  # the usual case: one producer's contiguous batch
            first.producer_id is not None
            and first.producer_id == last.producer_id
            and last.sequence - first.sequence == span == last.offset - first.offset
        ):
            key = (first.producer_id, name, partition)
            runs = self._producers.get(key, ())
            self._producers[key] = extend(runs, first.sequence, first.offset, len(records))
            return
        for record in records:  # a replicated or scanned batch may mix producers
            if record.producer_id is not None:
                key = (record.producer_id, name, partition)
                runs = self._producers.get(key, ())
                self._producers[key] = extend(runs, record.sequence, record.offset, 1)

    def apply_retention(self, now_ms: int) -> int:
        """Drop records past each topic's age and size limits; return partitions trimmed."""
        trimmed = 0
        for topic in self._topics.values():
            config = topic.config
            for store in topic.stores:
                cut = _retention_cut(store, config, now_ms)
                if cut > store.first_offset:
                    store.truncate_before(cut)
                    trimmed += 1
        return trimmed

    def close(self) -> None:
        for topic in self._topics.values():
            for store in topic.stores:
                store.close()


def check_entries(entries: Any) -> None:
    """Raise ``InvalidArgument`` unless ``entries`` is a valid batch of (key, value)."""
    if not isinstance(entries, list) or not 1 <= len(entries) <= BATCH_RECORDS_MAX:
        raise InvalidArgument(f"a batch holds 1..{BATCH_RECORDS_MAX} records")
    for entry in entries:
        if not isinstance(entry, tuple | list) or len(entry) != 2:
            raise InvalidArgument("a batch entry is a (key, value) pair")
        key, value = entry
        if not isinstance(value, bytes) or (key is not None and not isinstance(key, bytes)):
            raise InvalidArgument("record keys and values must be bytes")
        if len(value) + len(key or b"") > VALUE_BYTES_MAX:
            raise InvalidArgument(f"a record is limited to {VALUE_BYTES_MAX} bytes")


def check_fetch(
    offset: object,
    max_messages: object,
    wait_ms: object,
    max_messages_max: int = FETCH_MAX_MESSAGES,
) -> None:
    """Raise ``InvalidArgument`` unless a fetch's arguments are integers within bounds:
    ``offset >= 0``, ``1 <= max_messages <= max_messages_max``, ``0 <= wait_ms <=
    WAIT_MS_MAX``."""
    if type(offset) is not int or offset < 0:
        raise InvalidArgument("offset must be a non-negative integer")
    if type(max_messages) is not int or not 1 <= max_messages <= max_messages_max:
        raise InvalidArgument(f"max_messages must be within 1..{max_messages_max}")
    if type(wait_ms) is not int or not 0 <= wait_ms <= WAIT_MS_MAX:
        raise InvalidArgument(f"wait_ms must be within 0..{WAIT_MS_MAX}")


def _retention_cut(store: PartitionStore, config: TopicConfig, now_ms: int) -> int:
    """The lowest offset to keep under the topic's retention limits."""
    cut = store.first_offset
    if config.retention_ms is not None:
        while (batch := store.read(cut, 256, 1 << 24)) and batch[
            0
        ].timestamp_ms < now_ms - config.retention_ms:
            old = [r for r in batch if r.timestamp_ms < now_ms - config.retention_ms]
            cut = old[-1].offset + 1
            if len(old) < len(batch):
                break
    if config.retention_bytes is not None:
        sizes: list[tuple[int, int]] = []
        offset = cut
        while batch := store.read(offset, 1000, 1 << 24):
            sizes.extend((r.offset, len(r.value) + len(r.key or b"")) for r in batch)
            offset = batch[-1].offset + 1
        total = sum(size for _, size in sizes)
        for record_offset, size in sizes:
            if total <= config.retention_bytes:
                break
            total -= size
            cut = record_offset + 1
    return cut
