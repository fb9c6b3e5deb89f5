"""pubsub under the nemesis: three replicating brokers (fsync always), producers through the
public client while brokers are killed (-9), restarted, paused, cut off from their peers
(both ways and one way), slowed and made to fail their fsyncs (then restarted), one at a time, with a proxy on every replication link.
Nothing acknowledged is lost, nothing is stored twice, offsets increase, and every
acknowledged offset holds its value."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from blocks.testing import (
    NETWORK_FAULTS,
    PROCESS_FAULTS,
    FaultKind,
    FsyncFaults,
    Nemesis,
    Network,
    ProcessCluster,
    nemesis_seeds,
    nemesis_steps,
)
from blocks.testing.servers import pubsub_spec
from blocks.testing.workloads import PubSubWorkload, Workload, run_under_nemesis

pytestmark = pytest.mark.process
ISOLATIONS = (FaultKind.ISOLATE, FaultKind.ISOLATE_ONE_WAY)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ProcessCluster, Network, dict[str, FsyncFaults]]]:
    root = tmp_path_factory.mktemp("pubsub")
    with (
        ProcessCluster(pubsub_spec(), ["b1", "b2", "b3"], root) as nodes,
        Network(nodes, "cluster") as network,
    ):
        faults = {name: FsyncFaults(nodes, name) for name in nodes.names}
        nodes.start_all()
        yield nodes, network, faults


@pytest.mark.parametrize("seed", nemesis_seeds([5]))  # 5: isolated one way, failing fsyncs
def test_pubsub_survives_process_and_network_faults(
    cluster: tuple[ProcessCluster, Network, dict[str, FsyncFaults]], seed: int
) -> None:
    nodes, network, faults = cluster
    kinds = [*PROCESS_FAULTS, *NETWORK_FAULTS, FaultKind.FSYNC_EIO]
    nemesis = Nemesis(
        nodes, seed=seed, kinds=kinds, steps=nemesis_steps(), network=network, fsync_faults=faults
    )

    async def workload() -> Workload:
        return await PubSubWorkload.open(nodes.addresses(), nodes.token, seed)

    run_under_nemesis("pubsub", nodes, nemesis, workload)
    if any(fault.kind in ISOLATIONS for fault in nemesis.survived):
        assert network.bytes_dropped() > 0, "an isolation that dropped nothing: proxies bypassed"
