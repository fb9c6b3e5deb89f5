"""counters under the nemesis: three gossiping replicas, clients adding through every node
while nodes are paused, cut off from their peers (both ways and one way) and slowed, one at a
time, with a proxy on every gossip link. After healing, every node converges on a value
between the acknowledged increments and those plus the unknown ones.

Kills are not injected: a replica keeps its counters in memory, and one that restarts empty
under the same name is what the gossip design says it does not survive."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from blocks.testing import (
    NETWORK_FAULTS,
    FaultKind,
    Nemesis,
    Network,
    ProcessCluster,
    nemesis_seeds,
    nemesis_steps,
)
from blocks.testing.servers import counters_spec
from blocks.testing.workloads import CountersWorkload, Workload, run_under_nemesis

pytestmark = pytest.mark.process
ISOLATIONS = (FaultKind.ISOLATE, FaultKind.ISOLATE_ONE_WAY)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProcessCluster, Network]]:
    root = tmp_path_factory.mktemp("counters")
    with (
        ProcessCluster(counters_spec(), ["c1", "c2", "c3"], root) as nodes,
        Network(nodes, "gossip") as network,
    ):
        nodes.start_all()
        yield nodes, network


@pytest.mark.parametrize("seed", nemesis_seeds([1]))
def test_counters_converge_through_pauses_and_network_faults(
    cluster: tuple[ProcessCluster, Network], seed: int
) -> None:
    nodes, network = cluster
    kinds = [FaultKind.PAUSE, *NETWORK_FAULTS]
    nemesis = Nemesis(nodes, seed=seed, kinds=kinds, steps=nemesis_steps(), network=network)

    async def workload() -> Workload:
        return CountersWorkload(nodes.addresses(), nodes.token, seed)

    run_under_nemesis("counters", nodes, nemesis, workload)
    if any(fault.kind in ISOLATIONS for fault in nemesis.survived):
        assert network.bytes_dropped() > 0, "an isolation that dropped nothing: proxies bypassed"
