"""``Replication`` runs its cores from the timers they ask for in their ``Ready``, with no
interval tick: a follower's election deadline elects a new leader after a crash, a leader's
check drops a cut-off follower from the ISR and makes a cut-off leader step down, and an idle
cluster's cores are woken far less often than a fixed tick would wake them. Seeded
simulations in virtual time (a few seconds of wall time for all of them)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from blocks.core.memory_network import LinkConfig
from blocks.pubsub.cluster import ClusterBroker, ReplicationConfig
from blocks.pubsub.replica import PartitionReplica
from blocks.testing.simloop import Simulation, run_simulation

NODES = ["b1", "b2", "b3"]
ELECTION_TIMEOUT_MS = 400
LAG_MAX_MS = 800
FETCH_WAIT_MS = 100
TIMING = ReplicationConfig(
    election_timeout_ms=ELECTION_TIMEOUT_MS,
    lag_max_ms=LAG_MAX_MS,
    fetch_wait_ms=FETCH_WAIT_MS,
    fetch_timeout_ms=200,
)


async def open_cluster(sim: Simulation, root: Path) -> dict[str, ClusterBroker]:
    """Three brokers and one topic of one partition, led by its creation leader."""
    sim.network.set_default_link(LinkConfig(delay_ms=(1, 5)))
    brokers = {}
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
        broker.start()
        brokers[name] = broker
    await brokers["b1"].create_topic("t", partitions=1)
    await asyncio.sleep(0.5)
    return brokers


def roles(brokers: dict[str, ClusterBroker]) -> dict[str, object]:
    return {name: b.describe("t", 0)["role"] for name, b in brokers.items()}


def leader_of(brokers: dict[str, ClusterBroker]) -> str:
    (leader,) = [name for name, role in roles(brokers).items() if role == "leader"]
    return leader


def isr(broker: ClusterBroker) -> list[str]:
    members = broker.describe("t", 0)["isr"]
    assert isinstance(members, list)
    return sorted(members)


async def close(brokers: dict[str, ClusterBroker]) -> None:
    for broker in brokers.values():
        await broker.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_crashed_leader_is_replaced_within_its_election_timers(seed: int, tmp_path: Path) -> None:
    """Only the followers' election timers can start an election here: nothing else calls
    them while their leader is gone (withholding those timers, no leader ever emerges)."""

    async def scenario(sim: Simulation) -> None:
        brokers = await open_cluster(sim, tmp_path)
        old = leader_of(brokers)
        sim.network.crash(old)
        await brokers.pop(old).close()
        crashed_at = sim.clock.monotonic()
        # A deadline is at most 2 timeouts away; a pre-vote and a vote round trip follow,
        # and a split vote costs one more deadline.
        while not any(role == "leader" for role in roles(brokers).values()):
            assert sim.clock.monotonic() - crashed_at < 5 * ELECTION_TIMEOUT_MS / 1000.0, roles(
                brokers
            )
            await asyncio.sleep(0.01)
        await close(brokers)

    run_simulation(scenario, seed, time_limit_s=60)


@pytest.mark.parametrize("seed", [1, 2])
def test_a_leaders_own_timer_shrinks_the_isr_and_steps_it_down(seed: int, tmp_path: Path) -> None:
    """A follower cut off leaves the leader's ISR once ``lag_max_ms`` passed, and a leader cut
    off from both followers steps down after two election timeouts: both only from the
    leader's timer (no message reaches it that could step it)."""

    async def scenario(sim: Simulation) -> None:
        brokers = await open_cluster(sim, tmp_path)
        leader = leader_of(brokers)
        cut, kept = [n for n in NODES if n != leader]
        assert isr(brokers[leader]) == sorted(NODES)
        sim.network.partition([[cut], [leader, kept]])
        await asyncio.sleep((LAG_MAX_MS + 3 * FETCH_WAIT_MS) / 1000.0)
        assert isr(brokers[leader]) == sorted([leader, kept])
        sim.network.partition([[leader], [cut, kept]])
        await asyncio.sleep((3 * ELECTION_TIMEOUT_MS + 3 * FETCH_WAIT_MS) / 1000.0)
        assert brokers[leader].describe("t", 0)["role"] != "leader"
        await close(brokers)

    run_simulation(scenario, seed, time_limit_s=60)


def test_an_idle_cluster_is_not_woken_on_a_fixed_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten idle seconds: each follower's core is ticked about once per election timeout (its
    fetches keep moving the deadline, and the driver re-arms without calling it), the
    leader's about once per fetch round (its announcements fall due ``announce_interval_ms``
    after the oldest fetch). A tick every 50 ms, the old driver's, is 200 per core."""
    ticks: dict[str, int] = {}
    original = PartitionReplica.tick

    def counted(self: PartitionReplica, now_ms: int) -> object:
        ticks[self.config.node] = ticks.get(self.config.node, 0) + 1
        return original(self, now_ms)

    monkeypatch.setattr(PartitionReplica, "tick", counted)
    idle_s = 10.0

    async def scenario(sim: Simulation) -> tuple[str, dict[str, int]]:
        brokers = await open_cluster(sim, tmp_path)
        leader = leader_of(brokers)
        ticks.clear()
        before = {n: b.replication.timer_wakeups for n, b in brokers.items()}
        await asyncio.sleep(idle_s)
        assert leader_of(brokers) == leader  # nothing changed while idle
        wakeups = {n: b.replication.timer_wakeups - before[n] for n, b in brokers.items()}
        await close(brokers)
        return leader, wakeups

    leader, wakeups = run_simulation(scenario, 1, time_limit_s=60)
    # A follower's deadline is at least one election timeout after its last fetch answer.
    follower_max = idle_s * 1000 / ELECTION_TIMEOUT_MS + 1
    # A leader's next check is an announcement, announce_interval_ms after the older of its
    # followers' last fetches, which come every fetch_wait_ms (plus a few ms of network).
    announce_ms = 250  # ReplicaConfig.announce_interval_ms
    leader_max = idle_s * 1000 / (announce_ms - FETCH_WAIT_MS - 10) + 1
    for node in NODES:
        limit = leader_max if node == leader else follower_max
        assert ticks.get(node, 0) <= limit, (node, ticks)
        assert wakeups[node] <= limit, (node, wakeups)  # a re-arm is a wakeup too
    assert ticks.get(leader, 0) > 0  # the count does see the leader's checks
