"""blob under the nemesis: three S3 nodes that place rs 4+2 shards on each other (``--peer``),
a writer per node PUTting objects of up to 160 KiB while nodes are killed (-9), restarted
paused, and made to fail their fsyncs (then restarted), one at a time. Metadata is replicated
(a cluster's default). Every acknowledged object reads back byte-identical from the node
that took it. And the issue #14 reproduction: 30 objects, then one node restarted (SIGTERM
or kill -9), then every object must still read back from every node (before the fix, every shard on every
node was deleted and all 30 answered 500 "0 good shards of 6")."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from blocks.blob.client import S3Client
from blocks.testing import (
    PROCESS_FAULTS,
    FaultKind,
    FsyncFaults,
    Nemesis,
    ProcessCluster,
    nemesis_seeds,
    nemesis_steps,
)
from blocks.testing.servers import BLOB_ACCESS_KEY, BLOB_SECRET_KEY, blob_spec
from blocks.testing.workloads import BlobWorkload, Workload, run_under_nemesis
from blocks.testing.workloads.blob import object_bytes

pytestmark = pytest.mark.process
NODES = ["n1", "n2", "n3"]


FAULTS: dict[str, FsyncFaults] = {}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    with ProcessCluster(blob_spec(), NODES, tmp_path_factory.mktemp("blob")) as nodes:
        FAULTS.update({name: FsyncFaults(nodes, name) for name in nodes.names})
        nodes.start_all()
        yield nodes


@pytest.mark.parametrize("seed", nemesis_seeds([9]))  # 9: failing fsyncs, a restart
def test_blob_survives_process_and_fsync_faults(cluster: ProcessCluster, seed: int) -> None:
    kinds = [*PROCESS_FAULTS, FaultKind.FSYNC_EIO]
    nemesis = Nemesis(cluster, seed=seed, kinds=kinds, steps=nemesis_steps(), fsync_faults=FAULTS)

    async def workload() -> Workload:
        return await BlobWorkload.open(cluster.addresses(), seed)

    run_under_nemesis("blob", cluster, nemesis, workload)


def _client(cluster: ProcessCluster, node: str) -> S3Client:
    return S3Client(f"http://{cluster.address(node)}", BLOB_ACCESS_KEY, BLOB_SECRET_KEY)


def test_restarting_one_node_keeps_every_object(cluster: ProcessCluster) -> None:
    """kill -9 here; the blob tests' own restart test also covers SIGTERM."""
    how = "kill-9"
    bucket = "restart-kill-9"
    objects = {(node, f"{node}/o{i}"): 1 + i * 9_001 for node in NODES for i in range(10)}
    with cluster.failure_notes(f"blob restart reproduction ({how})"):
        cluster.start_all()
        creator = _client(cluster, NODES[0])
        creator.create_bucket(bucket)  # replicated metadata: every node has it
        creator.close()
        for node in NODES:
            client = _client(cluster, node)
            for (owner, key), size in objects.items():
                if owner == node:
                    client.put_object(bucket, key, object_bytes(key, size))
            client.close()
        cluster.restart("n2")
        unreadable = []
        readers = [(node, key, size) for (_, key), size in objects.items() for node in NODES]
        for node, key, size in readers:  # any node serves any object
            client = _client(cluster, node)
            try:
                if client.get_object(bucket, key) != object_bytes(key, size):
                    unreadable.append(f"{key} from {node}: different bytes")
            except Exception as error:
                unreadable.append(f"{key} from {node}: {error}")
            finally:
                client.close()
        assert not unreadable, f"{len(unreadable)} of {len(readers)} reads failed: {unreadable[:3]}"
