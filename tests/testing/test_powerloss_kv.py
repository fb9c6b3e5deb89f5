"""kv nodes in the simulator with power-loss crashes: no acknowledged write is lost.

Five whole nodes (driver, membership, Bitcask store) run on a faulty ``MemoryNetwork`` in
virtual time. A crash here is a power cut: everything the node wrote since its last fsync is
dropped (torn tails kept at random) before it restarts. A write is acknowledged only once
``W`` replicas saved it under the store's sync policy, and both ``always`` and ``batch`` fsync
before that, so after the heal every acknowledged write must be in the converged object:
still a sibling, or seen by the write that replaced it. Under ``never`` the store promises
nothing across power loss; those runs check that the cut really drops data and that the
replicas still converge (a node never reissues a dot: ``blocks.kv.cluster.dot_lease``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from blocks.core.errors import BlocksError
from blocks.core.memory_network import LinkConfig
from blocks.kv import (
    Dot,
    KVClient,
    LocalCluster,
    MembershipConfig,
    NodeConfig,
    QuorumConfig,
    SyncPolicy,
    Versioned,
    VersionVector,
)
from blocks.testing.powerloss import PowerLossDisk
from blocks.testing.simloop import Simulation, run_simulation

NODES = 5
KEYS = [b"k%d" % i for i in range(4)]
FAULTY = LinkConfig(delay_ms=(0.5, 20.0), loss=0.03, duplicate=0.03, reorder=0.1)
SIM_CONFIG = NodeConfig(
    quorum=QuorumConfig(timeout_s=0.5),
    membership=MembershipConfig(suspect_after_s=0.5),
    tick_s=0.05,
    gossip_interval_s=0.1,
    anti_entropy_interval_s=0.3,
)


Checker = Callable[[LocalCluster, "History", str], None]


@dataclass
class Acked:
    key: bytes
    value: bytes
    dot: Dot
    context: VersionVector


@dataclass
class History:
    acked: list[Acked] = field(default_factory=list)
    contexts: dict[bytes, VersionVector] = field(default_factory=dict)  # by value
    bytes_dropped: int = 0
    cuts: int = 0


async def _worker(sim: Simulation, client: KVClient, name: str, history: History) -> None:
    contexts: dict[bytes, bytes] = {}
    for step in range(25):
        await asyncio.sleep(sim.random.uniform(0.0, 0.15))
        key = sim.random.choice(KEYS)
        try:
            if sim.random.random() < 0.3:
                contexts[key] = (await client.get(key, timeout_s=1.0)).context
                continue
            context = contexts.get(key, Versioned.of(None).context)
            value = f"{name}-{step}".encode()
            result = await client.write(key, value, context, timeout_s=1.0)
            history.acked.append(Acked(key, value, result.dot, result.obj.context))
        except BlocksError:
            pass


async def _power_chaos(
    sim: Simulation, cluster: LocalCluster, disk: PowerLossDisk, history: History
) -> None:
    assert cluster.data_dir is not None
    names = sorted(cluster.nodes)
    down: set[str] = set()
    for _ in range(10):
        await asyncio.sleep(sim.random.uniform(0.1, 0.4))
        if sim.random.random() < 0.55 and len(down) < 2:
            victim = sim.random.choice(sorted(set(names) - down))
            with disk.power_cut(cluster.data_dir / victim):
                await cluster.crash(victim)
            assert disk.last_report is not None
            history.bytes_dropped += disk.last_report.bytes_dropped
            history.cuts += 1
            down.add(victim)
        elif down:
            back = sim.random.choice(sorted(down))
            await cluster.restart(back)
            down.discard(back)
    for name in sorted(down):
        await cluster.restart(name)


def _check_convergence(cluster: LocalCluster, history: History, label: str) -> None:
    some_node = next(iter(cluster.nodes.values()))
    for key in KEYS:
        home = some_node._ring.preference_list(key, 3)
        copies = [cluster.nodes[n].core.objects.get(key) for n in home]
        assert all(c == copies[0] for c in copies), (label, key, copies)


def _check(cluster: LocalCluster, history: History, label: str) -> None:
    some_node = next(iter(cluster.nodes.values()))
    for key in KEYS:
        home = some_node._ring.preference_list(key, 3)
        copies = [cluster.nodes[n].core.objects.get(key) for n in home]
        assert all(c == copies[0] for c in copies), (label, key, copies)
        acked = [a for a in history.acked if a.key == key]
        final = copies[0]
        if final is None:
            assert not acked, (label, key, acked)
            continue
        for write in acked:
            assert final.context.covers(write.dot), (label, "lost", write)


async def _scenario(
    sim: Simulation, root: Path, sync: SyncPolicy, check: Checker | None = None
) -> History:
    sim.network.set_default_link(FAULTY)
    disk = PowerLossDisk(random.Random(sim.seed), torn_tail_probability=0.5)
    for number in range(1, NODES + 1):
        disk.track(root / f"n{number}")
    cluster = LocalCluster(
        nodes=NODES,
        network=sim.network,
        clock=sim.clock,
        seed=sim.seed,
        config=SIM_CONFIG,
        data_dir=root,
        sync=sync,
    )
    history = History()
    with disk.installed():
        await cluster.start()
        try:
            clients = [cluster.client(timeout_s=1.0, balance="random") for _ in range(3)]
            await asyncio.gather(
                *(_worker(sim, c, f"c{i}", history) for i, c in enumerate(clients)),
                _power_chaos(sim, cluster, disk, history),
            )
            sim.network.set_default_link(LinkConfig())
            await asyncio.sleep(6.0)  # liveness: gossip, hand-off and anti-entropy
            if check is not None:
                check(cluster, history, f"seed={sim.seed} sync={sync}")
        finally:
            await cluster.stop()
    return history


@pytest.mark.parametrize("sync", ["always", "batch"])
@pytest.mark.parametrize("seed", range(4))
def test_power_loss_keeps_every_acknowledged_write(
    seed: int, sync: SyncPolicy, tmp_path: Path
) -> None:
    history = run_simulation(
        lambda sim: _scenario(sim, tmp_path, sync, _check), seed, time_limit_s=600
    )
    assert len(history.acked) >= 10 and history.cuts >= 1, (seed, history)


def test_power_loss_under_sync_never_drops_unsynced_bytes(tmp_path: Path) -> None:
    """Guard against a no-op disk: without fsyncs, the cuts must drop what nodes wrote."""
    dropped = 0
    for seed in range(2):
        history = run_simulation(
            lambda sim, s=seed: _scenario(sim, tmp_path / str(s), "never"), seed, time_limit_s=600
        )
        dropped += history.bytes_dropped
    assert dropped > 0


def test_power_loss_under_sync_never_still_converges(tmp_path: Path) -> None:
    """Under ``never`` a cut loses acknowledged writes, but no dot is ever reused, so the
    replicas converge (seed 1 reused one before counters were reserved durably)."""
    run_simulation(
        lambda sim: _scenario(sim, tmp_path, "never", _check_convergence), 1, time_limit_s=600
    )
