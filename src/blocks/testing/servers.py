"""Ready ``ServerSpec``s for the blocks that run as processes, and their health requests.

Each function returns a spec for ``blocks.testing.ProcessCluster``: the ``blocks <block>
serve`` command line for a node (its peers' addresses come from the cluster, so a proxy can
stand in for one link) and a health check that makes a real request: a gRPC
``grpc.health.v1`` Check with the bearer token, a kv ``status`` over the data path, an S3
``ListBuckets`` signed with the test credentials. Durable settings (fsync always) are the
default: the kit tests what a block promises, not its fast mode.

A spec for your own server is the same three things; see docs/testing.md.
"""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped,unused-ignore]

from blocks.testing.process import NodeInfo, PeerAddresses, ServerSpec, blocks_argv

__all__ = [
    "BLOB_ACCESS_KEY",
    "BLOB_SECRET_KEY",
    "HEALTH_REQUEST_TIMEOUT_S",
    "blob_spec",
    "cache_spec",
    "counters_spec",
    "grpc_health_check",
    "kv_spec",
    "pubsub_spec",
    "queue_cluster_spec",
    "queue_spec",
    "sequencer_spec",
]

HEALTH_REQUEST_TIMEOUT_S = 3.0
BLOB_ACCESS_KEY = "AKIDKIT"
BLOB_SECRET_KEY = "kit-secret"


class NotHealthy(Exception):
    """The server answered, but not that it is serving."""


def grpc_health_check(address: str, token: str | None) -> None:
    """One ``grpc.health.v1.Health/Check`` for the overall service; raises unless SERVING."""
    metadata = [] if token is None else [("authorization", f"Bearer {token}")]
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""),
            timeout=HEALTH_REQUEST_TIMEOUT_S,
            metadata=metadata,
        )
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        raise NotHealthy(f"{address}: health status {reply.status}")


def _grpc_health(node: NodeInfo) -> None:
    grpc_health_check(node.address("listen"), node.token)


# -- kv ------------------------------------------------------------------------------------


def kv_spec(
    *, replicas: int = 3, read_quorum: int = 2, write_quorum: int = 2, sync: str = "always"
) -> ServerSpec:
    """``blocks kv serve`` nodes that know each other as ``--peer``s (data path only)."""

    def argv(node: NodeInfo, peers: PeerAddresses) -> list[str]:
        token_file = node.data_dir.parent / "token"
        token_file.write_text(node.token)
        return blocks_argv(
            "kv", "serve", "--node-id", node.name, "--listen", node.address("listen"),
            "--data-dir", str(node.data_dir), "--token-file", str(token_file),
            "--replicas", str(replicas), "--read-quorum", str(read_quorum),
            "--write-quorum", str(write_quorum), "--sync", sync, "--json",
            *(f"--peer={peer}={roles['listen']}" for peer, roles in peers.items()),
        )  # fmt: skip

    return ServerSpec("kv", ("listen",), argv, _kv_health)


def _kv_health(node: NodeInfo) -> None:
    from blocks.kv.client import connect

    async def probe() -> None:
        async with await connect(
            node.address("listen"), token=node.token, timeout_s=HEALTH_REQUEST_TIMEOUT_S
        ) as client:
            reports = await client.status()
            if not any(r.get("node") == node.name and "error" not in r for r in reports):
                raise NotHealthy(f"{node.name} missing from status: {reports}")

    asyncio.run(probe())


# -- pubsub and queue ------------------------------------------------------------------------


def pubsub_spec(*, fsync: str = "always") -> ServerSpec:
    """Brokers that replicate to each other (``--peer`` on the ``cluster`` port) when the
    cluster has more than one node; the framed data path listens on the ``data`` port."""

    def argv(node: NodeInfo, peers: PeerAddresses) -> list[str]:
        command = blocks_argv(
            "pubsub", "serve", "--node-id", node.name, "--listen", node.address("listen"),
            "--data-dir", str(node.data_dir), "--fsync", fsync, "--token", node.token,
            "--data-port", str(node.ports["data"]), "--json",
        )  # fmt: skip
        if peers:
            command += ["--cluster-listen", node.address("cluster")]
            command += [f"--peer={peer}={roles['cluster']}" for peer, roles in peers.items()]
        return command

    return ServerSpec("pubsub", ("listen", "cluster", "data"), argv, _grpc_health)


def queue_spec(*, fsync: str = "always") -> ServerSpec:
    """Single-node queue servers (one per cluster node; they do not talk to each other)."""

    def argv(node: NodeInfo, peers: PeerAddresses) -> list[str]:
        return blocks_argv(
            "queue", "serve", "--listen", node.address("listen"), "--data-dir",
            str(node.data_dir), "--fsync", fsync, "--token", node.token,
            "--data-port", str(node.ports["data"]), "--json",
        )  # fmt: skip

    return ServerSpec("queue", ("listen", "data"), argv, _grpc_health)


def queue_cluster_spec(
    *, fsync: str = "always", snapshot_every: int = 50_000, segment_bytes: int = 16 << 20
) -> ServerSpec:
    """Nodes of one replicated queue (``--peer`` on the ``cluster`` port; any node serves any
    call); the framed data path listens on the ``data`` port."""

    def argv(node: NodeInfo, peers: PeerAddresses) -> list[str]:
        return blocks_argv(
            "queue", "serve", "--node-id", node.name, "--listen", node.address("listen"),
            "--data-dir", str(node.data_dir), "--fsync", fsync, "--token", node.token,
            "--data-port", str(node.ports["data"]), "--cluster-listen", node.address("cluster"),
            "--json", "--snapshot-every", str(snapshot_every),
            "--segment-bytes", str(segment_bytes),
            *(f"--peer={peer}={roles['cluster']}" for peer, roles in peers.items()),
        )  # fmt: skip

    return ServerSpec("queue", ("listen", "cluster", "data"), argv, _grpc_health)


# -- blob ------------------------------------------------------------------------------------


def blob_spec(*, codec: str = "rs:4+2", chunk_kib: int = 64, fsync: bool = True) -> ServerSpec:
    """S3 nodes that place shards on each other (every node lists every other as ``--peer``);
    a one-node cluster keeps every shard locally. With peers the nodes replicate their
    metadata (the default), so any node serves any object. Credentials:
    ``BLOB_ACCESS_KEY`` and ``BLOB_SECRET_KEY``; peers share the cluster token."""

    def argv(node: NodeInfo, peers: PeerAddresses) -> list[str]:
        command = blocks_argv(
            "blob", "serve", "--data-dir", str(node.data_dir), "--listen",
            node.address("listen"), "--access-key", BLOB_ACCESS_KEY, "--secret-key",
            BLOB_SECRET_KEY, "--cluster-token", node.token, "--chunk-kib", str(chunk_kib),
        )  # fmt: skip
        if peers:
            command += ["--codec", codec]
            for roles in peers.values():
                command += ["--peer", f"http://{roles['listen']}"]
        if not fsync:
            command.append("--no-fsync")
        return command

    return ServerSpec("blob", ("listen",), argv, _blob_health)


def _blob_health(node: NodeInfo) -> None:
    from blocks.blob.client import S3Client

    client = S3Client(f"http://{node.address('listen')}", BLOB_ACCESS_KEY, BLOB_SECRET_KEY)
    try:
        client.list_buckets()
    finally:
        client.close()


# -- cache ----------------------------------------------------------------------------------------


def cache_spec(*, capacity: int = 100_000) -> ServerSpec:
    """Cache nodes named after their nodes, each given every other node as a seed (``--peer``):
    they form one cluster by gossip (docs/cache.md, "Cluster membership")."""

    def argv(node: NodeInfo, peers: PeerAddresses) -> list[str]:
        command = blocks_argv(
            "cache", "serve", "--name", node.name, "--listen", node.address("listen"),
            "--token", node.token, "--capacity", str(capacity), "--json",
        )  # fmt: skip
        return command + [f"--peer={roles['listen']}" for roles in peers.values()]

    return ServerSpec("cache", ("listen",), argv, _grpc_health)


# -- counters and sequencer ---------------------------------------------------------------------


def counters_spec(*, durable: bool = False) -> ServerSpec:
    """Counter replicas named after their nodes, gossiping on the ``gossip`` port; with
    ``durable`` each keeps its state in its data dir (``--data-dir``) across restarts."""

    def argv(node: NodeInfo, peers: PeerAddresses) -> list[str]:
        command = blocks_argv(
            "counters", "serve", "--name", node.name, "--listen", node.address("listen"),
            "--token", node.token, "--json",
        )  # fmt: skip
        if durable:
            command += ["--data-dir", str(node.data_dir)]
        if peers:
            command += ["--gossip-port", str(node.ports["gossip"])]
            command += [f"--peer={peer}={roles['gossip']}" for peer, roles in peers.items()]
        return command

    return ServerSpec("counters", ("listen", "gossip"), argv, _grpc_health)


def sequencer_spec(
    *, lease_ttl_ms: int | None = None, extra_argv: tuple[str, ...] = ()
) -> ServerSpec:
    """Sequencer servers, each with its own lease table and ticket state; ``extra_argv`` is
    appended to every node's command (say ``--lease-from kv://...``)."""

    def argv(node: NodeInfo, peers: PeerAddresses) -> list[str]:
        command = blocks_argv(
            "sequencer", "serve", "--data-dir", str(node.data_dir), "--listen",
            node.address("listen"), "--token", node.token, "--json",
        )  # fmt: skip
        if lease_ttl_ms is not None:
            command += ["--lease-ttl-ms", str(lease_ttl_ms)]
        return command + list(extra_argv)

    return ServerSpec("sequencer", ("listen",), argv, _grpc_health)
