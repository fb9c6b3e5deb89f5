"""Seeded simulation: idempotent producers and a consumer over a lossy, duplicating,
partitioned network, with a broker crash and restart; then the history checker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from blocks.core.errors import BlocksError
from blocks.core.memory_network import LinkConfig
from blocks.pubsub.checker import Commit, Poll, Send, check_history
from blocks.pubsub.local import LocalBroker
from blocks.testing.simloop import Simulation, run_simulation

PARTITIONS = 2


class BrokerNode:
    """The broker behind a Transport handler; ``restart`` reopens it from its files."""

    def __init__(self, sim: Simulation, directory: Path) -> None:
        self.sim, self.directory = sim, directory
        self.transport = sim.network.transport("broker")
        self.broker = self._open()
        self.transport.serve(self.handle)

    def _open(self) -> LocalBroker:
        return LocalBroker(self.directory, clock=self.sim.clock, fsync="never")

    async def restart(self) -> None:
        await self.broker.close()
        self.broker = self._open()

    async def handle(self, source: str, message: Any) -> Any:
        op = message["op"]
        if op == "produce":
            return await self.broker.produce_batch(
                "t",
                message["partition"],
                [(None, message["value"])],
                producer_id=message["producer"],
                sequence=message["seq"],
            )
        if op == "fetch":
            records = await self.broker.fetch("t", message["partition"], message["offset"], 20)
            return [[r.offset, r.value] for r in records]
        raise AssertionError(op)


async def scenario(sim: Simulation, directory: Path) -> None:
    node = BrokerNode(sim, directory)
    await node.broker.create_topic("t", partitions=PARTITIONS)
    sim.network.set_default_link(LinkConfig(delay_ms=(1, 20), loss=0.1, duplicate=0.1, reorder=0.1))
    sends: list[Send] = []
    polls: list[Poll] = []
    commits: list[Commit] = []
    stop = asyncio.Event()

    async def producer(name: str, count: int) -> None:
        transport = sim.network.transport(name)
        for seq in range(count):
            partition = seq % PARTITIONS
            value = f"{name}:{seq}".encode()
            while True:  # retry the same sequence until acknowledged
                request = {
                    "op": "produce",
                    "partition": partition,
                    "value": value,
                    "producer": name,
                    "seq": seq // PARTITIONS,
                }
                try:
                    offset = await transport.request("broker", request, timeout_s=0.2)
                except BlocksError:
                    await asyncio.sleep(0.05)
                    continue
                sends.append(Send(partition, offset, value))
                break

    async def consumer() -> None:
        transport = sim.network.transport("consumer")
        positions = [0] * PARTITIONS
        while not stop.is_set():
            for partition in range(PARTITIONS):
                request = {"op": "fetch", "partition": partition, "offset": positions[partition]}
                try:
                    rows = await transport.request("broker", request, timeout_s=0.2)
                except BlocksError:
                    continue
                if rows:
                    polls.append(Poll("c", partition, tuple(o for o, _ in rows)))
                    positions[partition] = rows[-1][0] + 1
                    commits.append(Commit("g", partition, positions[partition]))
            await asyncio.sleep(0.02)

    async def nemesis() -> None:
        await asyncio.sleep(0.5)
        sim.network.partition([["broker", "consumer"], ["p1", "p2"]])
        await asyncio.sleep(0.5)
        sim.network.heal()
        await asyncio.sleep(0.3)
        sim.network.crash("broker")
        await node.restart()
        await asyncio.sleep(0.3)
        sim.network.restart("broker")

    reader = asyncio.ensure_future(consumer())
    await asyncio.gather(producer("p1", 40), producer("p2", 40), nemesis())
    sim.network.set_default_link(LinkConfig(delay_ms=(1, 5)))  # healed: liveness phase
    await asyncio.sleep(2.0)
    stop.set()
    await reader
    final = {
        p: [(r.offset, r.value) for r in await node.broker.fetch("t", p, 0, 10_000)]
        for p in range(PARTITIONS)
    }
    await node.broker.close()
    result = check_history(sends, polls, commits, final)
    assert result.valid, result
    assert len(sends) == 80
    assert sum(len(rows) for rows in final.values()) == 80, "a retry was stored twice"
    seen = {(poll.partition, o) for poll in polls for o in poll.offsets}
    assert len(seen) == 80, "the consumer should have read everything"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_acknowledged_send_lost_or_duplicated(seed: int, tmp_path: Path) -> None:
    run_simulation(lambda sim: scenario(sim, tmp_path / str(seed)), seed, time_limit_s=600)


def test_checker_flags_each_violation() -> None:
    final = {0: [(0, b"a"), (1, b"b"), (2, b"a")]}
    result = check_history(
        [Send(0, 1, b"b"), Send(0, 3, b"lost")],
        [Poll("c", 0, (0, 1)), Poll("c", 0, (2, 2)), Poll("d", 0, (0,)), Poll("d", 0, (2,))],
        [Commit("g", 0, 5), Commit("g", 0, 4)],
        final,
    )
    assert [s.value for s in result.lost] == [b"lost"]
    assert result.duplicates == [(b"a", [(0, 0), (0, 2)])]
    assert len(result.non_monotonic) == 1
    assert [skipped for _, skipped in result.skips] == [1]
    assert result.commits_backwards == [(Commit("g", 0, 4), 5)]
    assert not result.valid
