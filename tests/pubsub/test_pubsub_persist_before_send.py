"""The driver keeps the ``Ready`` rule: a replica's hard state is on disk before a message
that rests on it leaves (``Replication.settle``: records, then messages).

Seeded simulation: three brokers, one partition; its leader crashes, so the others hold an
election. Every replication message a broker hands to its transport is checked against the
``(epoch, voted_for)`` file at that moment: a vote request, a granted vote and an epoch
announcement must each be covered by what is persisted.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from blocks.core.codec import unpack
from blocks.pubsub.cluster import ClusterBroker, ReplicationConfig
from blocks.pubsub.replica_messages import BeginEpoch, Message, VoteReply, VoteRequest
from blocks.pubsub.replication import Replication
from blocks.testing.simloop import Simulation, run_simulation

NODES = ["b1", "b2", "b3"]
TIMING = ReplicationConfig(
    election_timeout_ms=300, lag_max_ms=600, fetch_wait_ms=100, fetch_timeout_ms=200
)


def _watch(name: str, replication: Replication, checked: list[str], broken: list[str]) -> None:
    """Check each message ``replication`` sends against its persisted hard state."""
    send = replication.send

    def checked_send(destination: str, key: tuple[str, int], message: Message) -> None:
        path = replication.hard_states.path(key)
        assert path is not None
        epoch, voted_for = unpack(path.read_bytes()) if path.exists() else (0, None)
        what = f"{name} -> {destination}: {message} with ({epoch}, {voted_for}) on disk"
        if isinstance(message, VoteRequest) and not message.pre:
            ok = (epoch, voted_for) == (message.epoch, name)  # its own vote, persisted
        elif isinstance(message, VoteReply) and message.granted and not message.pre:
            ok = (epoch, voted_for) == (message.vote_epoch, destination)
        elif isinstance(message, VoteReply | BeginEpoch):
            ok = epoch >= message.epoch
        else:
            ok = True  # a pre-vote request changes nothing here
        checked.append(what)
        if not ok:
            broken.append(what)
        send(destination, key, message)

    replication.send = checked_send  # type: ignore[method-assign]


async def scenario(sim: Simulation, root: Path) -> tuple[list[str], list[str], int]:
    checked: list[str] = []
    broken: list[str] = []
    brokers: dict[str, ClusterBroker] = {}
    for name in NODES:
        broker = ClusterBroker(
            root / name,
            sim.network.transport(name),
            NODES,
            clock=sim.clock,
            rng=random.Random(f"{sim.seed}:{name}"),
            fsync="never",
            replication=TIMING,
        )
        _watch(name, broker.replication, checked, broken)
        broker.start()
        brokers[name] = broker
    await brokers["b1"].create_topic("t", partitions=1)
    await asyncio.sleep(1.0)
    leader = next(n for n, b in brokers.items() if b.describe("t", 0).get("role") == "leader")
    sim.network.crash(leader)
    await brokers.pop(leader).close()
    await asyncio.sleep(3.0)  # the two others elect a leader of a later epoch
    epochs = [int(b.describe("t", 0)["epoch"]) for b in brokers.values()]  # type: ignore[call-overload]
    for broker in brokers.values():
        await broker.close()
    return checked, broken, max(epochs)


@pytest.mark.parametrize("seed", [1, 2])
def test_hard_state_is_persisted_before_the_messages_that_rest_on_it(
    seed: int, tmp_path: Path
) -> None:
    checked, broken, epoch = run_simulation(
        lambda sim: scenario(sim, tmp_path / str(seed)), seed, time_limit_s=120
    )
    assert epoch > 1, "no election happened: nothing was checked that matters"
    assert any("VoteRequest" in line and "pre=False" in line for line in checked)
    assert not broken, broken[:5]
