"""``Consumer``: a consumer-group member as an async iterator, over any ``PubSub``.

Theory of operation: the consumer joins its group, then loops: heartbeat when due (which
reveals rebalances: on a new generation it drops its positions and starts each newly assigned
partition at the group's committed offset), fetch from its partitions in turn and yield the
records. Fetches are pulls of at most ``max_messages`` records, so the broker never buffers
for a slow consumer: the consumer's request is its credit. When a whole round over its
partitions finds nothing, it waits on one partition with a long poll (``wait_ms``).

``commit()`` commits, for each partition, the offset after the last record yielded. Records
yielded but not committed are delivered again after a crash or a rebalance: at-least-once.
If the commit is refused because the group moved on (``Conflict``), the consumer rejoins.
"""

from __future__ import annotations

import collections
import uuid
from collections.abc import AsyncIterator
from typing import Any

from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import Conflict
from blocks.pubsub.api import Assignment, Record

__all__ = ["Consumer"]


class Consumer:
    """``async for record in client.consumer(topic, group=...): ...; await consumer.commit()``."""

    def __init__(
        self,
        broker: Any,
        topic: str,
        group: str,
        *,
        member: str | None = None,
        max_messages: int = 500,
        wait_ms: int = 200,
        heartbeat_ms: int = 1_000,
        clock: Clock | None = None,
    ) -> None:
        self._broker = broker
        self.topic = topic
        self.group = group
        self.member = member or f"consumer-{uuid.uuid4().hex[:12]}"
        self._max_messages = max_messages
        self._wait_ms = wait_ms
        self._heartbeat_s = heartbeat_ms / 1000.0
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._assignment: Assignment | None = None
        self._positions: dict[int, int] = {}  # next offset to fetch
        self._yielded: dict[int, int] = {}  # offset after the last record handed out
        self._buffer: collections.deque[Record] = collections.deque()
        self._next_heartbeat_s = 0.0
        self._turn = 0
        self._closed = False

    @property
    def assignment(self) -> Assignment | None:
        return self._assignment

    async def _adopt(self, assignment: Assignment) -> None:
        if self._assignment is not None and assignment.generation == self._assignment.generation:
            return
        self._assignment = assignment
        self._positions, self._yielded = {}, {}
        self._buffer.clear()
        for partition in assignment.partitions:
            committed = await self._broker.committed(self.group, self.topic, partition)
            if committed is None:
                committed, _ = await self._broker.end_offsets(self.topic, partition)
            self._positions[partition] = committed

    async def _maybe_heartbeat(self) -> None:
        now_s = self._clock.monotonic()
        if self._assignment is not None and now_s < self._next_heartbeat_s:
            return
        self._next_heartbeat_s = now_s + self._heartbeat_s
        if self._assignment is None:
            assignment = await self._broker.join_group(self.group, self.topic, self.member)
        else:
            try:
                assignment = await self._broker.heartbeat(self.group, self.member)
            except Conflict:
                assignment = await self._broker.join_group(self.group, self.topic, self.member)
        await self._adopt(assignment)

    async def refresh(self) -> Assignment | None:
        """Heartbeat now (instead of when due) and adopt any new assignment."""
        self._next_heartbeat_s = 0.0
        await self._maybe_heartbeat()
        return self._assignment

    async def poll(self) -> list[Record]:
        """One round: heartbeat if due, then fetch from the next partitions with data."""
        await self._maybe_heartbeat()
        partitions = sorted(self._positions)
        if not partitions:
            return []
        for step in range(len(partitions)):
            partition = partitions[(self._turn + step) % len(partitions)]
            last = step == len(partitions) - 1
            records = await self._broker.fetch(
                self.topic,
                partition,
                self._positions[partition],
                self._max_messages,
                self._wait_ms if last else 0,
            )
            if records:
                self._turn = (self._turn + step + 1) % len(partitions)
                self._positions[partition] = records[-1].offset + 1
                return list(records)
        return []

    def __aiter__(self) -> AsyncIterator[Record]:
        return self

    async def __anext__(self) -> Record:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            self._buffer.extend(await self.poll())
        record = self._buffer.popleft()
        self._yielded[record.partition] = record.offset + 1
        return record

    async def commit(self) -> dict[int, int]:
        """Commit the yielded positions; return ``{partition: committed offset}``."""
        if self._assignment is None:
            return {}
        done: dict[int, int] = {}
        for partition, offset in sorted(self._yielded.items()):
            try:
                done[partition] = await self._broker.commit(
                    self.group, self.member, self._assignment.generation, partition, offset
                )
            except Conflict:
                self._next_heartbeat_s = 0.0  # the group moved on: rejoin at the next poll
                raise
        return done

    async def close(self) -> None:
        """Leave the group (its partitions go to the other members at once)."""
        if self._closed:
            return
        self._closed = True
        if self._assignment is not None:
            await self._broker.leave_group(self.group, self.member)
