"""kv under the nemesis: three ``blocks kv serve`` processes (N=3, R=2, W=2, sync always),
writers and a reader through the public client while nodes are killed (-9), restarted,
paused, wiped (restarted with an empty data directory), and have their fsyncs fail with EIO
(then restarted), and, in a second test, while a node is cut off from its peers (both ways
or one way) or its links are slowed, one fault at a time. Nothing acknowledged is lost;
nothing read was never written; each key is linearizable as a register.

Every link between two nodes runs through a proxy (``Network``): a node dials each peer at the
``--peer`` address it was given, which gossip never replaces (clients dial nodes directly)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from blocks.core.errors import BlocksError
from blocks.kv.client import connect
from blocks.testing import (
    NETWORK_FAULTS,
    PROCESS_FAULTS,
    FaultKind,
    FsyncFaults,
    Nemesis,
    Network,
    ProcessCluster,
    SmallDisk,
    nemesis_seeds,
    nemesis_steps,
    small_disk_unavailable,
)
from blocks.testing.servers import kv_spec
from blocks.testing.workloads import KvWorkload, Workload, run_under_nemesis

pytestmark = pytest.mark.process


Cluster = tuple[ProcessCluster, dict[str, FsyncFaults], Network]
ISOLATIONS = (FaultKind.ISOLATE, FaultKind.ISOLATE_ONE_WAY)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with (
        ProcessCluster(kv_spec(), ["n1", "n2", "n3"], tmp_path_factory.mktemp("kv")) as nodes,
        Network(nodes, "listen") as network,
    ):
        faults = {name: FsyncFaults(nodes, name) for name in nodes.names}
        nodes.start_all()
        yield nodes, faults, network


@pytest.mark.parametrize("seed", nemesis_seeds([53]))  # 53: a wiped node, an fsync failure
def test_kv_survives_process_disk_and_wipe_faults(cluster: Cluster, seed: int) -> None:
    nodes, faults, _ = cluster
    kinds = [*PROCESS_FAULTS, FaultKind.FSYNC_EIO, FaultKind.WIPE]
    nemesis = Nemesis(nodes, seed=seed, kinds=kinds, steps=nemesis_steps(), fsync_faults=faults)

    async def workload() -> Workload:
        return await KvWorkload.open(nodes.addresses(), nodes.token, seed)

    run_under_nemesis("kv", nodes, nemesis, workload)


@pytest.mark.parametrize("seed", nemesis_seeds([3]))  # 3: isolate n3, then one way
def test_kv_survives_network_faults(cluster: Cluster, seed: int) -> None:
    nodes, _, network = cluster
    nemesis = Nemesis(
        nodes, seed=seed, kinds=list(NETWORK_FAULTS), steps=nemesis_steps(), network=network
    )

    async def workload() -> Workload:
        return await KvWorkload.open(nodes.addresses(), nodes.token, seed)

    dropped_before = network.bytes_dropped()
    run_under_nemesis("kv", nodes, nemesis, workload)
    if any(fault.kind in ISOLATIONS for fault in nemesis.survived):
        dropped = network.bytes_dropped() - dropped_before
        assert dropped > 0, "an isolation that dropped nothing: the proxies were bypassed"


DISK_MIB = 20
VALUE_BYTES = 64 * 1024
WRITES_MAX = 4 * DISK_MIB * 1024 * 1024 // VALUE_BYTES  # well past full
WRITE_TIMEOUT_S = 10.0  # a write that has not answered by then hangs


def test_a_full_disk_is_a_clear_error_and_loses_nothing(tmp_path: Path) -> None:
    """Issue #14: a node on a 20 MiB filesystem. Before the fix, once the disk was full,
    writes and reads of acknowledged keys timed out forever. Now each write answers (an
    error once the disk is full), reads go on, and what was acknowledged is there after a
    restart."""
    reason = small_disk_unavailable()
    if reason is not None:
        pytest.skip(reason)
    spec = kv_spec(replicas=1, read_quorum=1, write_quorum=1)
    with (
        ProcessCluster(spec, ["solo"], tmp_path) as cluster,
        SmallDisk(cluster.info("solo").data_dir, DISK_MIB),
        cluster.failure_notes("kv full disk"),
    ):
        cluster.start_all()
        acknowledged, refusal = asyncio.run(_fill(cluster))
        assert acknowledged, "nothing fit on the disk"
        assert refusal is not None, f"{len(acknowledged)} writes of {VALUE_BYTES} B all fit"
        assert not isinstance(refusal, TimeoutError), f"a write hung: {refusal!r}"
        assert isinstance(refusal, BlocksError), refusal
        assert asyncio.run(_missing(cluster, acknowledged[-20:])) == []  # reads go on
        cluster.restart("solo")
        assert asyncio.run(_missing(cluster, acknowledged)) == []
        cluster.close()


async def _fill(cluster: ProcessCluster) -> tuple[list[str], BaseException | None]:
    acknowledged: list[str] = []
    async with await connect(
        cluster.addresses(), token=cluster.token, timeout_s=WRITE_TIMEOUT_S
    ) as client:
        for number in range(WRITES_MAX):
            key = f"fill-{number}"
            try:
                await asyncio.wait_for(client.put(key, _value(key)), WRITE_TIMEOUT_S)
            except (BlocksError, TimeoutError) as error:
                return acknowledged, error
            acknowledged.append(key)
    return acknowledged, None


async def _missing(cluster: ProcessCluster, keys: list[str]) -> list[str]:
    missing = []
    async with await connect(
        cluster.addresses(), token=cluster.token, timeout_s=WRITE_TIMEOUT_S
    ) as client:
        for key in keys:
            got = await asyncio.wait_for(client.get(key), WRITE_TIMEOUT_S)
            if got.value != _value(key):
                missing.append(key)
    return missing


def _value(key: str) -> bytes:
    return (key.encode() * (VALUE_BYTES // len(key) + 1))[:VALUE_BYTES]
