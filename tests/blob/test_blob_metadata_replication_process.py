"""Replicated metadata in real processes (#15 item 2): three ``blocks blob serve
--replicate-metadata`` nodes placing rs 4+2 shards on each other. Objects PUT through n1
(boto3, one client per node on reused connections); n1 is killed with -9 and its data
directory wiped; every acknowledged object reads back from n2 and n3, bytes and metadata
(content type, user metadata, listing) and a deleted key stays deleted. n1 restarts empty:
it catches up before serving, repair rewrites its shards, and no shard file is deleted on
any node (an earlier collector that trusted one node wiped every shard, #14)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from blocks.blob.client import S3Client
from blocks.blob.erasure import chunk_id_of
from blocks.blob.node import CLUSTER_NAMESPACE
from blocks.testing import ProcessCluster
from blocks.testing.process import NodeInfo, PeerAddresses, ServerSpec, blocks_argv

pytestmark = pytest.mark.process

ACCESS, SECRET = "AKIDREPL", "repl-secret"
NODES = ["n1", "n2", "n3"]
DEADLINE_S = 120.0  # generous: the machine may be loaded; polls end as soon as it holds
OBJECTS = 12


def _spec(gc_grace_s: str) -> ServerSpec:
    def argv(node: NodeInfo, peers: PeerAddresses) -> list[str]:
        command = blocks_argv(
            "blob", "serve", "--data-dir", str(node.data_dir), "--listen",
            node.address("listen"), "--access-key", ACCESS, "--secret-key", SECRET,
            "--cluster-token", node.token, "--chunk-kib", "16", "--codec", "rs:4+2",
            "--replicate-metadata", "--meta-sync-s", "1", "--gc-grace-s", gc_grace_s,
        )  # fmt: skip
        for roles in peers.values():
            command += ["--peer", f"http://{roles['listen']}"]
        return command

    def health(node: NodeInfo) -> None:
        client = S3Client(f"http://{node.address('listen')}", ACCESS, SECRET)
        try:
            client.list_buckets()
        finally:
            client.close()

    return ServerSpec("blob", ("listen",), argv, health)


def _boto(address: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=f"http://{address}",
        aws_access_key_id=ACCESS,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            signature_version="s3v4",
            read_timeout=60,
        ),
    )


def _shard_files(data_dir: Path) -> set[str]:
    root = data_dir / "shards" / "peers" / CLUSTER_NAMESPACE
    return {path.name for path in root.glob("??/??/*.*") if not path.name.startswith(".tmp")}


def _eventually(check: Callable[[], object], what: str) -> None:
    """Poll ``check`` until it stops raising, within a generous deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            check()
            return
        except Exception as error:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {DEADLINE_S} s") from error
            time.sleep(0.2)


@pytest.fixture(params=["3600", "0"], ids=["grace-1h", "grace-0"])
def cluster_collecting(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[ProcessCluster, bool]]:
    """With the default grace period nothing is collected during the test; with none, the
    collector runs every second on every node while nodes die, come back empty and are
    repaired: only the deleted object's chunks may go, and only once every node agrees."""
    with ProcessCluster(_spec(request.param), NODES, tmp_path) as nodes:
        nodes.start_all()
        yield nodes, request.param == "0"


def _expected() -> dict[str, tuple[bytes, str, dict[str, str]]]:
    objects = {}
    for i in range(OBJECTS):
        key = f"dir{i % 3}/object-{i}"
        data = os.urandom(1 + i * 7_001)  # 1 byte .. ~77 KB: up to five 16 KiB chunks
        objects[key] = (data, f"application/x-test-{i}", {"index": str(i), "owner": "n1"})
    return objects


def _check_node(client: Any, expected: dict[str, tuple[bytes, str, dict[str, str]]]) -> None:
    listing = client.list_objects_v2(Bucket="photos")
    assert sorted(o["Key"] for o in listing.get("Contents", [])) == sorted(expected)
    for key, (data, content_type, metadata) in expected.items():
        reply = client.get_object(Bucket="photos", Key=key)
        assert reply["Body"].read() == data, key
        assert reply["ContentType"] == content_type, key
        assert reply["Metadata"] == metadata, key
    missing = client.list_objects_v2(Bucket="photos", Prefix="gone")
    assert missing.get("KeyCount", 0) == 0


def test_losing_a_node_and_its_disk_loses_no_acknowledged_object(
    cluster_collecting: tuple[ProcessCluster, bool],
) -> None:
    cluster, collecting = cluster_collecting
    clients = {name: _boto(cluster.address(name)) for name in NODES}
    expected = _expected()
    with cluster.failure_notes("replicated metadata: kill -9 and wipe n1"):
        first = clients["n1"]
        first.create_bucket(Bucket="photos")
        for key, (data, content_type, metadata) in expected.items():
            first.put_object(
                Bucket="photos", Key=key, Body=data, ContentType=content_type, Metadata=metadata
            )  # acknowledged: on a majority
        first.put_object(Bucket="photos", Key="gone", Body=b"x" * 40_000)
        first.delete_object(Bucket="photos", Key="gone")
        before = {name: _shard_files(cluster.info(name).data_dir) for name in NODES}
        gone = {chunk_id_of(b"x" * 16_384), chunk_id_of(b"x" * (40_000 - 2 * 16_384))}
        wanted = {
            name: {file for file in files if file.partition(".")[0] not in gone}
            for name, files in before.items()
        }  # two shards of every chunk of every live object on every node
        assert len({len(files) for files in wanted.values()}) == 1 and wanted["n1"]

        cluster.kill("n1")
        cluster.wipe("n1")
        for name in ("n2", "n3"):
            _eventually(lambda name=name: _check_node(clients[name], expected), f"read via {name}")

        cluster.start("n1")  # an empty data directory: it syncs before it serves
        _check_node(clients["n1"], expected)
        # Repair rewrites n1's shards of every object; the deleted object's chunks are not
        # repaired, and are collected (only) when there is no grace period.
        if not collecting:
            assert wanted["n1"] != before["n1"]
            wanted["n2"], wanted["n3"] = before["n2"], before["n3"]  # nothing deleted

        def settled() -> None:
            for name in NODES:
                assert _shard_files(cluster.info(name).data_dir) == wanted[name], name

        _eventually(settled, "repair rewrote n1's shards")
        for name in NODES:
            _check_node(clients[name], expected)
    for client in clients.values():
        client.close()
