"""The pipelining idempotent producer and the broker's memory of recent batches.

* ``producers.py`` (runs) against a model that remembers every batch;
* ``Producer`` over a faulty link to a real ``LocalBroker``: requests lost before the broker,
  replies lost after it, overload refusals and reordering, with several batches in flight.
  Every acknowledged record must be stored exactly once at the offset its caller got, no
  record stored twice, and each caller's records in the order it produced them;
* the data path handler refusing malformed requests without writing anything.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.core.errors import InvalidArgument, Overloaded, Unavailable
from blocks.pubsub.batching_producer import Entries, Producer, ProducerConfig
from blocks.pubsub.datapath import DataPathHandler, produce_message
from blocks.pubsub.local import LocalBroker
from blocks.pubsub.producer_runs import RUNS_MAX, Run, duplicate_offset, extend, last_sequence

# -- runs -------------------------------------------------------------------------------------


@given(st.lists(st.tuples(st.integers(0, 2), st.integers(1, 4)), max_size=60))
def test_runs_answer_every_recent_batch_with_its_offset(batches: list[tuple[int, int]]) -> None:
    runs: dict[int, tuple[Run, ...]] = {}
    written: dict[int, list[tuple[int, int, int]]] = {}  # producer -> (sequence, length, offset)
    offset = 0
    for producer, length in batches:
        sequence = last_sequence(runs.get(producer, ())) + 1
        runs[producer] = extend(runs.get(producer, ()), sequence, offset, length)
        written.setdefault(producer, []).append((sequence, length, offset))
        offset += length
    for producer, history in written.items():
        kept = runs[producer]
        assert len(kept) <= RUNS_MAX
        assert last_sequence(kept) == history[-1][0] + history[-1][1] - 1
        for index, (sequence, length, original) in enumerate(history):
            found = duplicate_offset(kept, sequence, length)
            if index >= len(history) - RUNS_MAX:  # the newest batches are always answerable
                assert found == original
            else:
                assert found in (None, original)


# -- the producer over a faulty link ------------------------------------------------------------


class FaultyLink:
    """``send`` to a broker that may lose the request, lose the reply, refuse or delay."""

    def __init__(self, broker: LocalBroker, rng: random.Random, fault_rate: float) -> None:
        self.broker, self.rng, self.fault_rate = broker, rng, fault_rate

    async def send(
        self, topic: str, partition: int, entries: Entries, producer_id: str, sequence: int
    ) -> int:
        for _ in range(self.rng.randrange(4)):  # lets later batches overtake this one
            await asyncio.sleep(0)
        fault = self.rng.random() < self.fault_rate
        kind = self.rng.randrange(3)
        if fault and kind == 0:
            raise Unavailable("request lost")
        if fault and kind == 1:
            raise Overloaded("busy", retry_after_ms=0)
        base = await self.broker.produce_batch(
            topic, partition, entries, producer_id=producer_id, sequence=sequence
        )
        if fault and kind == 2:
            raise Unavailable("reply lost")
        return base


async def _run_producers(
    seed: int, fault_rate: float, callers: int, per_caller: int, in_flight: int
) -> None:
    broker = LocalBroker()
    await broker.create_topic("t", partitions=2)
    link = FaultyLink(broker, random.Random(seed), fault_rate)
    config = ProducerConfig(
        in_flight_max=in_flight, batch_records_max=3, retries_max=30, backoff_max_s=0.0
    )
    producer = Producer(link.send, config)
    acked: dict[bytes, tuple[int, int]] = {}

    async def caller(number: int) -> None:
        for i in range(per_caller):
            value = f"{number}-{i}".encode()
            partition = (number + i) % 2
            entries: Entries = [(None, value)]
            if i % 3 == 0:
                entries.append((None, value + b"+"))
            try:
                offset = await producer.produce("t", partition, entries)
            except Unavailable:
                continue
            acked[value] = (partition, offset)
            if len(entries) == 2:
                acked[value + b"+"] = (partition, offset + 1)

    await asyncio.gather(*(caller(n) for n in range(callers)))
    await producer.close()
    stored: dict[bytes, tuple[int, int]] = {}
    for partition in range(2):
        for record in await broker.fetch("t", partition, 0, 10_000):
            assert record.value not in stored, f"{record.value!r} stored twice"
            stored[record.value] = (partition, record.offset)
    for value, place in acked.items():
        assert stored.get(value) == place, f"acknowledged {value!r} not at {place}"
    for number in range(callers):  # one caller's records keep their order per partition
        for partition in range(2):
            mine = [
                stored[v][1]
                for v in (f"{number}-{i}".encode() for i in range(per_caller))
                if v in stored and stored[v][0] == partition
            ]
            assert mine == sorted(mine)
    await broker.close()


@settings(max_examples=20)
@given(
    st.integers(0, 2**32),
    st.sampled_from([0.0, 0.1, 0.3]),
    st.integers(1, 6),
    st.integers(1, 5),
)
def test_pipelined_producer_loses_and_duplicates_nothing(
    seed: int, fault_rate: float, callers: int, in_flight: int
) -> None:
    asyncio.run(_run_producers(seed, fault_rate, callers, 12, in_flight))


def test_producer_coalesces_concurrent_calls_and_fills_extra_slots() -> None:
    async def main() -> None:
        broker = LocalBroker()
        await broker.create_topic("t")
        sent: list[int] = []

        async def send(t: str, p: int, entries: Entries, pid: str, seq: int) -> int:
            sent.append(len(entries))
            await asyncio.sleep(0.01)
            return await broker.produce_batch(t, p, entries, producer_id=pid, sequence=seq)

        producer = Producer(send, ProducerConfig(batch_records_max=10))
        offsets = await asyncio.gather(
            *(producer.produce("t", 0, [(None, b"x")]) for _ in range(100))
        )
        assert sorted(offsets) == list(range(100))
        assert len(sent) < 20 and max(sent) == 10  # coalesced, full batches
        await producer.close()

    asyncio.run(main())


def test_producer_fails_only_the_bad_batch_and_renumbers_the_rest() -> None:
    async def main() -> None:
        broker = LocalBroker()
        await broker.create_topic("t")
        producer = Producer(
            lambda t, p, e, pid, seq: broker.produce_batch(t, p, e, producer_id=pid, sequence=seq),
            ProducerConfig(backoff_max_s=0.0),
        )
        with pytest.raises(Exception, match="partition"):
            await producer.produce("t", 5, [(None, b"bad")])
        assert await producer.produce("t", 0, [(None, b"good")]) == 0
        await producer.close()
        with pytest.raises(Exception, match="closed"):
            await producer.produce("t", 0, [(None, b"late")])
        with pytest.raises(InvalidArgument):
            ProducerConfig(in_flight_max=RUNS_MAX)

    asyncio.run(main())


# -- the data path's input checks --------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        None,
        [],
        {"op": "produce"},
        {"op": "nope", "t": "t", "p": 0},
        {**produce_message("t", 0, [(None, b"v")], None, 0), "e": [[b"k"]]},
        {**produce_message("t", 0, [(None, b"v")], None, 0), "e": [["k", b"v"]]},
        {**produce_message("t", 0, [(None, b"v")], None, 0), "p": True},
        {**produce_message("t", 0, [(None, b"v")], None, 0), "pid": 7},
        {**produce_message("t", 0, [(None, b"v")], None, 0), "seq": "0"},
        {"op": "fetch", "t": "t", "p": 0, "o": 0, "n": "many", "w": 0},
    ],
)
def test_data_path_refuses_malformed_requests(message: Any) -> None:
    async def main() -> None:
        broker = LocalBroker()
        await broker.create_topic("t")
        handler = DataPathHandler(broker)
        with pytest.raises(InvalidArgument):
            await handler("client", message)
        assert await broker.end_offsets("t", 0) == (0, 0)
        good = produce_message("t", 0, [[None, b"v"]], "p1", 0)  # type: ignore[list-item]
        assert await handler("client", good) == 0
        assert await handler("client", good) == 0  # a retry: deduplicated
        fetched = await handler("client", {"op": "fetch", "t": "t", "p": 0, "o": 0, "n": 5, "w": 0})
        assert [row[2] for row in fetched] == [b"v"]
        await broker.close()

    asyncio.run(main())
