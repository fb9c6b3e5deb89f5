"""The public kv contract against an in-process cluster, through the synchronous client."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

from blocks.kv import KeyValueStore
from blocks.kv.blocking_client import SyncClient
from blocks.kv.contract import KeyValueStoreContract
from blocks.kv.local_cluster import LocalCluster

VALUE_BYTES_MAX = 16 * 1024 * 1024


class ClusterContract(KeyValueStoreContract):
    """Five nodes, N3/R2/W2, on the memory network: a cluster must act like one dict."""

    value_bytes_max = None  # 16 MiB + 1 per example would dominate the run time

    def make_subject(self) -> KeyValueStore:
        cluster = LocalCluster(nodes=5, replicas=3, read_quorum=2, write_quorum=2)

        async def make():  # type: ignore[no-untyped-def]
            await cluster.start()
            # A long per-call bound: on a loaded machine the default 25 s synchronous wait
            # can run out (no node dies in this contract).
            return cluster.client(timeout_s=30.0)

        return SyncClient(make, on_close=cluster.stop)


ClusterContract.TestCase.settings = settings(
    max_examples=8,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestClusterContract = ClusterContract.TestCase
