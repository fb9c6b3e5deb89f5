"""pubsub workload: producers append unique values (keyed, so each key keeps a partition)
to one topic; the final state is every partition read from offset 0.

Beyond nothing lost and nothing invented: no value appears twice in the logs (the producer
is idempotent), offsets within a partition strictly increase, and each acknowledged
``(partition, offset)`` holds the value that was acknowledged there."""

from __future__ import annotations

import asyncio
from collections import Counter

from blocks.pubsub.client import PubSubClient, connect
from blocks.testing.checkers import Send, check_history
from blocks.testing.history import History
from blocks.testing.workloads.base import ERROR_BACKOFF_S, Verdict, judge, retrying

__all__ = ["PubSubWorkload"]

FETCH_BATCH = 1000


class PubSubWorkload:
    """Build with ``await PubSubWorkload.open(addresses, token, seed)``."""

    def __init__(self, client: PubSubClient, topic: str, partitions: int, producers: int):
        self.client = client
        self.topic = topic
        self.partitions = partitions
        self.producers = producers
        self.history = History()
        self.placed: dict[bytes, tuple[int, int]] = {}

    @classmethod
    async def open(
        cls,
        addresses: list[str],
        token: str,
        seed: int,
        *,
        partitions: int = 3,
        producers: int = 3,
        op_timeout_s: float = 5.0,
    ) -> PubSubWorkload:
        client = await connect(addresses, token=token, timeout_s=op_timeout_s)
        topic = f"nemesis-{seed}"
        await retrying(lambda: client.create_topic(topic, partitions=partitions))
        return cls(client, topic, partitions, producers)

    async def run(self, done: asyncio.Event) -> None:
        await asyncio.gather(*(self._producer(n, done) for n in range(self.producers)))

    async def _producer(self, number: int, done: asyncio.Event) -> None:
        sequence = 0
        while not done.is_set():
            value = f"{self.topic}-p{number}-{sequence}".encode()
            sequence += 1
            produce = self.client.produce(self.topic, value, key=value)
            placed = await self.history.call(number, "write", None, value, produce)
            if placed is None:
                await asyncio.sleep(ERROR_BACKOFF_S)
            else:
                self.placed[value] = placed

    async def _partition(self, partition: int) -> list[tuple[int, bytes]]:
        rows: list[tuple[int, bytes]] = []
        offset = 0
        while batch := await self.client.fetch(self.topic, partition, offset, FETCH_BATCH):
            rows.extend((record.offset, record.value) for record in batch)
            offset = batch[-1].offset + 1
        return rows

    async def verify(self) -> Verdict:
        problems: list[str] = []
        values: list[bytes] = []
        final: dict[int, list[tuple[int, bytes]]] = {}
        for partition in range(self.partitions):

            async def read(partition: int = partition) -> list[tuple[int, bytes]]:
                return await self._partition(partition)

            rows = await retrying(read)
            final[partition] = rows
            offsets = [offset for offset, _ in rows]
            if offsets != sorted(set(offsets)):
                problems.append(f"partition {partition}: offsets not increasing")
            stored = dict(rows)
            for value, (where, offset) in self.placed.items():
                if where == partition and stored.get(offset) not in (None, value):
                    problems.append(f"{value!r} acknowledged at {partition}/{offset}")
            values.extend(value for _, value in rows)
        sends = [Send(p, offset, value) for value, (p, offset) in self.placed.items()]
        result = check_history(sends, [], [], final)
        if not result.valid:
            problems.append(
                f"pubsub checker: lost {len(result.lost)}, duplicated {len(result.duplicates)}"
            )
        duplicates = [v for v, n in Counter(values).items() if n > 1]
        if duplicates:
            problems.append(f"{len(duplicates)} values stored twice, e.g. {duplicates[:3]}")
        return judge(self.history, list(values), problems)

    async def close(self) -> None:
        await self.client.close()
