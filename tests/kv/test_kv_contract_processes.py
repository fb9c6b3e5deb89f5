"""The public contract against three ``blocks kv serve`` processes, over TLS, and TLS itself.

One module-scoped cluster of three node processes (N3/R2/W2, TLS on the data path and gRPC,
a bearer token) serves both tests. The contract (``blocks.kv.contract``) runs through the
synchronous client; each example starts from an empty cluster by deleting every live key, so
the dict model and the cluster agree at the start. The TLS test shows clients that trust the
CA get in (Python, CLI, gRPC) and the others are refused, and that a node without the whole
TLS material does not start.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
from kv_processes import ProcessCluster, TlsFiles, make_tls_files, wait_all_healthy

from blocks.cli import main as blocks_main
from blocks.cli_errors import ExitCode
from blocks.core.errors import InvalidArgument, Unavailable
from blocks.core.rpc import connect_channel
from blocks.kv import KeyValueStore, kv_pb2, kv_pb2_grpc
from blocks.kv.blocking_client import SyncClient
from blocks.kv.client import connect
from blocks.kv.contract import KeyValueStoreContract

TOKEN = "kv-contract-processes-token"
NODES = ("a", "b", "c")


@pytest.fixture(scope="module")
def tls_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ProcessCluster, TlsFiles]]:
    root = tmp_path_factory.mktemp("kv-tls-cluster")
    tls = make_tls_files(root)
    cluster = ProcessCluster(
        root, NODES, token=TOKEN, grpc=True, options=["--sync", "never", *tls.serve_options()]
    )
    try:
        cluster.start_all()

        async def healthy() -> None:
            client = await connect(cluster.addresses(), token=TOKEN, tls_ca=tls.ca)
            try:
                await wait_all_healthy(client, set(NODES))
            finally:
                await client.close()

        asyncio.run(healthy())
        yield cluster, tls
    finally:
        cluster.stop_all()


@pytest.mark.process
def test_contract_against_three_processes(tls_cluster: tuple[ProcessCluster, TlsFiles]) -> None:
    cluster, tls = tls_cluster

    def fresh_client() -> SyncClient:
        return SyncClient.connect(cluster.addresses(), token=TOKEN, tls_ca=tls.ca)

    class ProcessContract(KeyValueStoreContract):
        value_bytes_max = None  # 16 MiB + 1 per example would dominate the run time

        def make_subject(self) -> KeyValueStore:
            client = fresh_client()
            for key in sorted(client.keys()):  # start from an empty cluster
                client.delete(key)
            assert len(client) == 0
            return client

        def restart_subject(self, store: KeyValueStore) -> KeyValueStore | None:
            store.close()  # the state lives in the processes, not in the client
            return fresh_client()

    run_state_machine_as_test(
        ProcessContract,
        settings=settings(
            max_examples=8,  # as many as the in-process cluster runs (test_kv_contract_cluster)
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


async def _grpc_over_tls(cluster: ProcessCluster, tls: TlsFiles) -> None:
    channel = connect_channel(f"127.0.0.1:{cluster.grpc['b']}", token=TOKEN, tls_ca=tls.ca)
    try:
        stub = kv_pb2_grpc.KvStub(channel)  # type: ignore[no-untyped-call]
        await stub.Put(kv_pb2.PutRequest(key=b"grpc-tls", value=b"sealed"))
        reply = await stub.Get(kv_pb2.GetRequest(key=b"grpc-tls"))
        assert reply.found and reply.value == b"sealed"
    finally:
        await channel.close()


async def _python_clients(cluster: ProcessCluster, tls: TlsFiles) -> None:
    client = await connect(
        cluster.address("a"), token=TOKEN, tls_ca=tls.ca, tls_server_name="localhost"
    )
    try:
        await client.put("tls-key", b"tls-value", w=3)  # every peer acked over TLS
        assert (await client.get("tls-key", r=3)).siblings == (b"tls-value",)
    finally:
        await client.close()
    refused: tuple[dict[str, Any], ...] = (
        {},  # plaintext against a TLS node
        {"tls_ca": tls.other_ca},  # a CA that did not sign the nodes
        {"tls_ca": tls.ca, "tls_server_name": "elsewhere.test"},  # a name not in the cert
    )
    for options in refused:
        with pytest.raises(Unavailable):
            await connect(cluster.addresses(), token=TOKEN, timeout_s=3.0, **options)
    with pytest.raises(InvalidArgument):
        await connect(cluster.addresses(), tls_ca=b"not a certificate")
    with pytest.raises(InvalidArgument):
        await connect(cluster.addresses(), tls_server_name="localhost")  # without tls_ca


@pytest.mark.process
def test_tls_lets_in_only_clients_that_trust_the_ca(
    tls_cluster: tuple[ProcessCluster, TlsFiles],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster, tls = tls_cluster
    asyncio.run(_python_clients(cluster, tls))
    asyncio.run(_grpc_over_tls(cluster, tls))
    # The CLI, in this process: with --tls-ca it gets in, without it is refused.
    assert cluster.token_file is not None
    common = ["--cluster", cluster.address("c"), "--token-file", str(cluster.token_file), "--json"]
    capsys.readouterr()
    assert blocks_main(["kv", "put", "cli-tls", "over-tls", "--tls-ca", str(tls.ca), *common]) == 0
    assert json.loads(capsys.readouterr().out)["siblings"] == ["over-tls"]
    assert blocks_main(["kv", "get", "cli-tls", *common]) == ExitCode.UNAVAILABLE
    assert "no kv node answered" in capsys.readouterr().err
    # A node given only part of the TLS material refuses to start, and says why.
    half = ["kv", "serve", "--node-id", "x", "--listen", "127.0.0.1:1", "--data-dir",
            str(tmp_path / "x"), "--tls-cert", str(tls.cert)]  # fmt: skip
    assert blocks_main(half) == ExitCode.USAGE
    assert "--tls-key" in capsys.readouterr().err
