"""The NATS JetStream adapters under engine faults: the nats-server is killed (-9), restarted
and paused (SIGSTOP) by ``EngineNemesis`` while a workload runs through the adapter.

Checked, with the fault kit's checkers:

* every call ends as the block's ``Unavailable`` or ``Timeout`` or succeeds: no nats-py
  exception escapes and no call hangs (``ErrorAudit``);
* nothing acknowledged is lost (JetStream file storage: a publish is acknowledged once it is
  written to the stream's file, which a kill -9 does not take back): ``check_history`` for
  pub-sub (and per-partition order, no duplicates, commits never backwards),
  ``check_queue_history`` for the queue (every acknowledged send delivered);
* the adapter works again once the server is back (each producer gets acknowledgements after
  the last fault).

``BLOCKS_SOAK_SEEDS=N`` runs N seeds of 6 faults each; ``BLOCKS_NEMESIS_SEED=S`` replays one.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from blocks.core.clock import ManualClock
from blocks.core.errors import Timeout, Unavailable
from blocks.testing.checkers import (
    Commit,
    Deletion,
    Delivery,
    Poll,
    QueueSend,
    Release,
    Send,
    check_history,
    check_queue_history,
)
from blocks.testing.engine_nemesis import (
    IN_FLIGHT_MAX,
    EngineNemesis,
    ErrorAudit,
    engine_soak_line,
    open_loop,
    run_engine_nemesis,
)
from blocks.testing.engines import NatsServer, nats_missing
from blocks.testing.history import History
from blocks.testing.nemesis import nemesis_seeds, nemesis_steps

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(nats_missing() is not None, reason=str(nats_missing())),
]

T = TypeVar("T")
SEEDS = nemesis_seeds([3])  # 3: kill, pause, kill
DEADLINE_S = 60.0  # recovery and draining, generous for a loaded machine
AFTER_FAULTS_ACKS = 20  # acknowledged calls each open loop needs once the last fault is healed
BACKOFF_S = 0.05  # after an error, so a down engine is not polled in a hot loop
PARTITIONS = 2
PRODUCERS = 2
VISIBILITY_MS = 3_000


def _nemesis(server: NatsServer, seed: int) -> EngineNemesis:
    return EngineNemesis({"nats": server}, seed=seed, steps=nemesis_steps(default=3), calm_s=0.5)


async def _retrying(call: Callable[[], Awaitable[T]]) -> T:
    """``call()`` once the server answers again (after a start JetStream recovers its
    streams before it serves them)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while True:
        try:
            return await call()
        except (Unavailable, Timeout):
            assert loop.time() < deadline, f"no answer {DEADLINE_S} s after the faults"
            await asyncio.sleep(0.1)


async def _done(awaitable: Awaitable[None]) -> bool:
    """True once ``awaitable`` returned (``History.call`` answers None for an error)."""
    await awaitable
    return True


# -- pub-sub ---------------------------------------------------------------------------------


class PubSubRun:
    """Producers with unique values, and one group member reading and committing."""

    def __init__(self, pubsub: Any, topic: str) -> None:
        self.pubsub = pubsub
        self.topic = topic
        self.audit = ErrorAudit()
        self.history = History()
        self.sends: list[Send] = []
        self.polls: list[Poll] = []
        self.commits: list[Commit] = []

    async def produce(self, producer: int, done: asyncio.Event) -> None:
        async def call(sequence: int) -> bool:
            partition, value = sequence % PARTITIONS, b"p%d:%d" % (producer, sequence)
            client = producer * IN_FLIGHT_MAX + sequence % IN_FLIGHT_MAX
            sent = await self.history.call(
                client,
                "produce",
                partition,
                value,
                self.audit.guard(
                    self.pubsub.produce(self.topic, value, partition=partition), "produce"
                ),
            )
            if sent is None:
                return False
            assert sent[0] == partition
            self.sends.append(Send(partition, sent[1], value))
            return True

        await open_loop(call, done, self.deadline, after_acks=AFTER_FAULTS_ACKS)

    async def consume(self, done: asyncio.Event) -> None:
        member = await _retrying(lambda: self.pubsub.join_group("g", self.topic, "m1"))
        positions = dict.fromkeys(range(PARTITIONS), 0)
        client = PRODUCERS * IN_FLIGHT_MAX
        while not done.is_set():
            for partition in range(PARTITIONS):
                records = await self.history.call(
                    client,
                    "fetch",
                    partition,
                    positions[partition],
                    self.audit.guard(
                        self.pubsub.fetch(self.topic, partition, positions[partition], 50),
                        "fetch",
                    ),
                    read=True,
                )
                if not records:
                    await asyncio.sleep(BACKOFF_S)
                    continue
                offsets = tuple(record.offset for record in records)
                self.polls.append(Poll("m1", partition, offsets))
                positions[partition] = offsets[-1] + 1
                committed = await self.history.call(
                    client,
                    "commit",
                    partition,
                    positions[partition],
                    self.audit.guard(
                        self.pubsub.commit(
                            "g", "m1", member.generation, partition, positions[partition]
                        ),
                        "commit",
                    ),
                )
                if committed is not None:
                    self.commits.append(Commit("g", partition, positions[partition]))

    async def workload(self, done: asyncio.Event) -> None:
        self.deadline = asyncio.get_running_loop().time() + DEADLINE_S * 3
        await asyncio.gather(
            *(self.produce(producer, done) for producer in range(PRODUCERS)), self.consume(done)
        )

    async def final(self) -> dict[int, list[tuple[int, bytes]]]:
        rows: dict[int, list[tuple[int, bytes]]] = {}
        for partition in range(PARTITIONS):
            _, end = await _retrying(
                functools.partial(self.pubsub.end_offsets, self.topic, partition)
            )
            rows[partition] = []
            while len(rows[partition]) < end:
                read = functools.partial(
                    self.pubsub.fetch, self.topic, partition, len(rows[partition]), 500
                )
                records = await _retrying(read)
                rows[partition] += [(record.offset, record.value) for record in records]
        return rows


@pytest.mark.parametrize("seed", SEEDS)
def test_nats_pubsub_survives_engine_faults(tmp_path: Path, seed: int) -> None:
    from blocks.pubsub.adapters.nats import NatsPubSub

    async def scenario(server: NatsServer, nemesis: EngineNemesis) -> None:
        pubsub = await NatsPubSub.open(
            server.url, namespace=f"f{uuid.uuid4().hex[:8]}_", clock=ManualClock(wall_ms=1_000)
        )
        try:
            await pubsub.create_topic("events", partitions=PARTITIONS)
            run = PubSubRun(pubsub, "events")
            await run_engine_nemesis(nemesis, run.workload)
            final = await run.final()
            result = check_history(run.sends, run.polls, run.commits, final)
            last_commits = {c.partition: c.offset for c in run.commits}
            for partition, offset in last_commits.items():
                stored = await _retrying(
                    functools.partial(pubsub.committed, "g", "events", partition)
                )
                assert stored is not None and stored >= offset, "an acknowledged commit lost"
            outcome = (
                f"produced={len(run.sends)} polls={len(run.polls)} commits={len(run.commits)} "
                f"{run.audit.describe()} valid={result.valid}"
            )
            engine_soak_line("nats-pubsub", nemesis, outcome)
            assert run.audit.valid, run.audit.describe()
            assert result.valid, result
            assert {fault.kind for fault in nemesis.survived}, "no fault was injected"
        finally:
            await pubsub.close()

    with NatsServer(tmp_path / "store") as server:
        nemesis = _nemesis(server, seed)
        try:
            asyncio.run(scenario(server, nemesis))
        except BaseException as error:
            error.add_note(nemesis.describe())
            raise


# -- queue -----------------------------------------------------------------------------------


class QueueRun:
    """Senders with unique bodies, one receiver acking what it gets."""

    def __init__(self, queue: Any, name: str) -> None:
        self.queue = queue
        self.name = name
        self.audit = ErrorAudit()
        self.history = History()
        self.sends: list[QueueSend] = []
        self.deliveries: list[Delivery] = []
        self.deletions: list[Deletion] = []
        self.releases: list[Release] = []

    async def send(self, sender: int, done: asyncio.Event) -> None:
        async def call(sequence: int) -> bool:
            body = b"s%d:%d" % (sender, sequence)
            client = sender * IN_FLIGHT_MAX + sequence % IN_FLIGHT_MAX
            sent = await self.history.call(
                client,
                "send",
                self.name,
                body,
                self.audit.guard(self.queue.send(self.name, body), "send"),
            )
            self.sends.append(QueueSend(body, sent is not None))
            return sent is not None

        await open_loop(call, done, self.deadline, after_acks=AFTER_FAULTS_ACKS)

    async def receive_once(self, wait_ms: int) -> int:
        client = PRODUCERS * IN_FLIGHT_MAX
        invoked = time.monotonic_ns()
        got = await self.history.call(
            client,
            "receive",
            self.name,
            None,
            self.audit.guard(
                self.queue.receive(self.name, max_messages=10, wait_ms=wait_ms), "receive"
            ),
            read=True,
        )
        completed = time.monotonic_ns()
        for message in got or []:
            self.deliveries.append(Delivery("r", message.body, invoked, completed))
            ack_invoked = time.monotonic_ns()
            acked = await self.history.call(
                client,
                "ack",
                self.name,
                message.body,
                self.audit.guard(_done(self.queue.ack(self.name, message.receipt)), "ack"),
            )
            if acked:
                self.deletions.append(Deletion(message.body, time.monotonic_ns()))
            else:  # it may be deleted or not: a redelivery is allowed from here on
                self.releases.append(Release(message.body, ack_invoked))
        if got is None:
            await asyncio.sleep(BACKOFF_S)
        return len(got or [])

    async def receive(self, done: asyncio.Event) -> None:
        while not done.is_set():
            await self.receive_once(200)

    async def workload(self, done: asyncio.Event) -> None:
        self.deadline = asyncio.get_running_loop().time() + DEADLINE_S * 3
        await asyncio.gather(
            *(self.send(sender, done) for sender in range(PRODUCERS)), self.receive(done)
        )

    async def drain(self) -> None:
        """Receive until every acknowledged send was delivered (those whose ack failed come
        back after the visibility timeout), within ``DEADLINE_S``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        wanted = {send.message_id for send in self.sends if send.acknowledged}
        while loop.time() < deadline:
            delivered = {delivery.message_id for delivery in self.deliveries}
            if wanted <= delivered and await self.receive_once(500) == 0:
                return
            await self.receive_once(500)


@pytest.mark.parametrize("seed", SEEDS)
def test_nats_queue_survives_engine_faults(tmp_path: Path, seed: int) -> None:
    from blocks.queue.adapters.nats import NatsQueue

    async def scenario(server: NatsServer, nemesis: EngineNemesis) -> None:
        queue = await NatsQueue.open(server.url, namespace=f"f{uuid.uuid4().hex[:8]}_")
        try:
            await queue.create_queue("jobs", visibility_ms=VISIBILITY_MS)
            run = QueueRun(queue, "jobs")
            await run_engine_nemesis(nemesis, run.workload)
            await run.drain()
            result = check_queue_history(
                run.sends,
                run.deliveries,
                visibility_timeout_ns=VISIBILITY_MS * 1_000_000,
                deletions=run.deletions,
                releases=run.releases,
            )
            engine_soak_line("nats-queue", nemesis, f"{result.describe()} {run.audit.describe()}")
            assert run.audit.valid, run.audit.describe()
            assert result.valid, result
        finally:
            await queue.close()

    with NatsServer(tmp_path / "store") as server:
        nemesis = _nemesis(server, seed)
        try:
            asyncio.run(scenario(server, nemesis))
        except BaseException as error:
            error.add_note(nemesis.describe())
            raise
