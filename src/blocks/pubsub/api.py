"""The pub-sub interface: a partitioned, replayable log with consumer groups.

Guarantees (what "at-least-once" means here):

* ``produce`` returns ``(partition, offset)`` only once the record is durable under the
  broker's fsync policy. A produce that failed with ``Timeout`` or ``Unavailable`` may or may
  not have been written; retrying it through the same client is safe because the client is an
  idempotent producer (its id and per-partition sequence numbers let the broker drop the
  duplicate and return the original offset).
* Within a partition, offsets are dense at write time and only grow; records are read back in
  offset order. Retention removes the oldest records, compaction removes older records of a
  key: both leave later offsets unchanged.
* A consumer in a group reads its assigned partitions from the group's committed offsets (the
  earliest retained offset when none); ``commit()`` stores, per partition, the offset after
  the last record the consumer has yielded. A crash between processing and committing replays
  the uncommitted records: at-least-once delivery. Committed offsets never move backwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Assignment", "PubSub", "Record"]


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Assignment:
    """A member's share of a group: its partitions in one generation."""

    group: str
    member: str
    generation: int
    partitions: tuple[int, ...]


@runtime_checkable
class PubSub(Protocol):
    """Topics with partitions; implemented by the local broker and the network client."""

    async def create_topic(
        self,
        name: str,
        partitions: int = 1,
        *,
        retention_ms: int | None = None,
        retention_bytes: int | None = None,
        compact: bool = False,
    ) -> None:
        """Create a topic; the same call again is a no-op (``AlreadyExists`` if different)."""
        ...

    async def partitions(self, topic: str) -> int:
        """The topic's number of partitions (``NotFound`` for an unknown topic)."""
        ...

    async def produce(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> tuple[int, int]:
        """Append one record; return ``(partition, offset)`` once durable. The partition is
        ``partition`` if given, else chosen by key hash, else round robin."""
        ...

    async def produce_batch(
        self, topic: str, partition: int, entries: list[tuple[bytes | None, bytes]]
    ) -> int:
        """Append records to one partition in one durable write; return the first offset."""
        ...

    async def fetch(
        self,
        topic: str,
        partition: int,
        offset: int,
        max_messages: int = 100,
        wait_ms: int = 0,
    ) -> list[Record]:
        """Records from ``offset`` on (from the first retained one if ``offset`` is older),
        at most ``max_messages``; with ``wait_ms`` wait that long for one to arrive."""
        ...

    async def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int:
        """The first offset whose timestamp is at or after ``timestamp_ms``."""
        ...

    async def end_offsets(self, topic: str, partition: int) -> tuple[int, int]:
        """``(first retained offset, next offset)`` of a partition."""
        ...

    async def join_group(self, group: str, topic: str, member: str) -> Assignment: ...

    async def heartbeat(self, group: str, member: str) -> Assignment:
        """``Conflict`` when the member was removed and must join again."""
        ...

    async def leave_group(self, group: str, member: str) -> None: ...

    async def commit(
        self, group: str, member: str, generation: int, partition: int, offset: int
    ) -> int:
        """Store the group's next offset for ``partition``; fenced by member and generation
        (``Conflict``); never moves backwards; returns the stored offset."""
        ...

    async def committed(self, group: str, topic: str, partition: int) -> int | None: ...

    def consumer(self, topic: str, group: str, **options: object) -> AsyncIterator[Record]:
        """A group member that yields records of its partitions; see ``Consumer``."""
        ...

    async def close(self) -> None: ...
