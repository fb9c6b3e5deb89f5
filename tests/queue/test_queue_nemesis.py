"""queue under the nemesis: one ``blocks queue serve`` process (fsync always), senders and a
consumer through the public client while the server is killed (-9), restarted, paused, and
has its fsyncs fail with EIO (then restarted). Every acknowledged send is consumed (at least once), nothing is received that was never sent."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import pytest

from blocks.queue.client import connect
from blocks.testing import (
    PROCESS_FAULTS,
    FaultKind,
    FsyncFaults,
    Nemesis,
    ProcessCluster,
    nemesis_seeds,
    nemesis_steps,
)
from blocks.testing.nemesis import SOAK_SEEDS_ENV
from blocks.testing.servers import queue_spec
from blocks.testing.workloads import QueueWorkload, Workload, run_under_nemesis

pytestmark = pytest.mark.process


FAULTS: dict[str, FsyncFaults] = {}
# The data path in make test; the gRPC path too in a soak run.
PATHS = [True, False] if os.environ.get(SOAK_SEEDS_ENV, "").strip() else [True]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    with ProcessCluster(queue_spec(), ["q1"], tmp_path_factory.mktemp("queue")) as nodes:
        FAULTS["q1"] = FsyncFaults(nodes, "q1")
        nodes.start_all()
        yield nodes


@pytest.mark.parametrize("seed", nemesis_seeds([1]))  # 1: a restart, an fsync failure
@pytest.mark.parametrize("data_path", PATHS, ids=["data-path", "grpc"][: len(PATHS)])
def test_queue_survives_process_faults(cluster: ProcessCluster, seed: int, data_path: bool) -> None:
    kinds = [*PROCESS_FAULTS, FaultKind.FSYNC_EIO]
    nemesis = Nemesis(cluster, seed=seed, kinds=kinds, steps=nemesis_steps(), fsync_faults=FAULTS)

    async def workload() -> Workload:
        address = cluster.address("q1")
        return await QueueWorkload.open(address, cluster.token, seed, data_path=data_path)

    run_under_nemesis("queue", cluster, nemesis, workload)


def test_the_data_path_client_recovers_from_a_server_restart(cluster: ProcessCluster) -> None:
    async def run() -> None:
        client = await connect(cluster.address("q1"), token=cluster.token, timeout_s=3.0)
        try:
            await client.create_queue("restart-probe")
            await client.send("restart-probe", b"before")
            await asyncio.to_thread(cluster.restart, "q1")
            deadline = time.monotonic() + 8.0  # the gRPC path is back within about 1 s
            while True:
                try:
                    await client.send("restart-probe", b"after")
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
        finally:
            await client.close()

    with cluster.failure_notes("queue data path after a restart"):
        asyncio.run(run())
