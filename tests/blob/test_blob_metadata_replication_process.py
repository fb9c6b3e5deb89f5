"""Replicated metadata in real processes (#15 item 2): three ``blocks blob serve
--replicate-metadata`` nodes placing rs 4+2 shards on each other. Objects PUT through n1
(boto3, one client per node on reused connections); n1 is killed with -9 and its data
directory wiped; every acknowledged object reads back from n2 and n3, bytes and metadata
(content type, user metadata, listing) and a deleted key stays deleted, and so do the
versions of a versioned bucket (non-current ones, delete markers, one deleted for good). n1 restarts empty:
it catches up before serving, repair rewrites its shards, and no shard file is deleted on
any node (an earlier collector that trusted one node wiped every shard, #14). Writers keep
PUTting through n1 while it is killed: what it acknowledged survives, and PUTs cut short
leave only what the collector may take."""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from blocks.blob.client import S3Client
from blocks.blob.cluster.node import CLUSTER_NAMESPACE
from blocks.blob.storage.erasure import chunk_id_of
from blocks.testing import (
    PROCESS_FAULTS,
    FaultKind,
    FsyncFaults,
    Nemesis,
    ProcessCluster,
    nemesis_seeds,
    nemesis_steps,
)
from blocks.testing.history import OpType
from blocks.testing.process import NodeInfo, PeerAddresses, ServerSpec, blocks_argv
from blocks.testing.servers import BLOB_ACCESS_KEY, BLOB_SECRET_KEY
from blocks.testing.workloads import BlobWorkload, Verdict, Workload, run_under_nemesis
from blocks.testing.workloads.base import judge, retrying

pytestmark = pytest.mark.process

ACCESS, SECRET = BLOB_ACCESS_KEY, BLOB_SECRET_KEY  # the kit's workload signs with these
NODES = ["n1", "n2", "n3"]
DEADLINE_S = 120.0  # generous: the machine may be loaded; polls end as soon as it holds
OBJECTS = 12
CHUNK = 16 * 1024


def _spec(gc_grace_s: str, chunk_kib: str = "16") -> ServerSpec:
    def argv(node: NodeInfo, peers: PeerAddresses) -> list[str]:
        command = blocks_argv(
            "blob", "serve", "--data-dir", str(node.data_dir), "--listen",
            node.address("listen"), "--access-key", ACCESS, "--secret-key", SECRET,
            "--cluster-token", node.token, "--chunk-kib", chunk_kib, "--codec", "rs:4+2",
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


def _check_node(
    client: Any,
    expected: dict[str, tuple[bytes, str, dict[str, str]]],
    acknowledged: dict[str, bytes],
    attempted: set[str],
) -> None:
    """Every acknowledged object, bytes and metadata, from ``client``'s node; the listing
    holds them all, and nothing else but PUTs that were attempted (their outcome unknown)."""
    listing = client.list_objects_v2(Bucket="photos")
    listed = {o["Key"] for o in listing.get("Contents", [])}
    assert set(expected) | set(acknowledged) <= listed
    assert listed - set(expected) <= attempted
    for key, (data, content_type, metadata) in expected.items():
        reply = client.get_object(Bucket="photos", Key=key)
        assert reply["Body"].read() == data, key
        assert reply["ContentType"] == content_type, key
        assert reply["Metadata"] == metadata, key
    for key, data in acknowledged.items():
        assert client.get_object(Bucket="photos", Key=key)["Body"].read() == data, key
    missing = client.list_objects_v2(Bucket="photos", Prefix="gone")
    assert missing.get("KeyCount", 0) == 0


class Writers:
    """Threads PUTting through one node until it fails them; what it acknowledged."""

    def __init__(self, address: str, threads: int = 3) -> None:
        self.acknowledged: dict[str, bytes] = {}
        self.attempted: set[str] = set()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._write, args=(address, n), daemon=True)
            for n in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def _write(self, address: str, writer: int) -> None:
        client = _boto(address)
        for i in itertools.count():
            key = f"load/{writer}/{i}"
            data = os.urandom(20_000 + 3_001 * (i % 7))
            with self._lock:
                self.attempted.add(key)
            try:
                client.put_object(Bucket="photos", Key=key, Body=data)
            except Exception:
                return  # the node died: this PUT's outcome is unknown
            with self._lock:
                self.acknowledged[key] = data

    def count(self) -> int:
        with self._lock:
            return len(self.acknowledged)

    def join(self) -> None:
        for thread in self._threads:
            thread.join(DEADLINE_S)
            assert not thread.is_alive()


def _chunk_files(data_dir: Path) -> collections.Counter[str]:
    return collections.Counter(name.partition(".")[0] for name in _shard_files(data_dir))


def _live_chunk_ids(client: Any) -> set[str]:
    """The chunk ids of every object listed and of every version in the versioned bucket,
    non-current ones included (16 KiB chunks, content-addressed)."""
    ids = set()
    for entry in client.list_objects_v2(Bucket="photos").get("Contents", []):
        data = client.get_object(Bucket="photos", Key=entry["Key"])["Body"].read()
        ids |= {chunk_id_of(data[at : at + CHUNK]) for at in range(0, len(data), CHUNK)}
    for entry in client.list_object_versions(Bucket="history").get("Versions", []):
        version = {"Key": entry["Key"], "VersionId": entry["VersionId"]}
        data = client.get_object(Bucket="history", **version)["Body"].read()
        ids |= {chunk_id_of(data[at : at + CHUNK]) for at in range(0, len(data), CHUNK)}
    return ids


def _write_versions(client: Any) -> list[tuple[str, str, bool, bytes | None]]:
    """A versioned bucket: two versions of a key under a delete marker, and a key whose
    older version was deleted for good; (key, version id, latest, bytes or None for a
    marker), as ListObjectVersions must list them."""
    client.create_bucket(Bucket="history")
    client.put_bucket_versioning(Bucket="history", VersioningConfiguration={"Status": "Enabled"})
    put = [os.urandom(40_000), os.urandom(30_000), os.urandom(20_000), os.urandom(25_000)]
    first = client.put_object(Bucket="history", Key="doc", Body=put[0])["VersionId"]
    second = client.put_object(Bucket="history", Key="doc", Body=put[1])["VersionId"]
    marker = client.delete_object(Bucket="history", Key="doc")["VersionId"]
    gone = client.put_object(Bucket="history", Key="page", Body=put[2])["VersionId"]
    kept = client.put_object(Bucket="history", Key="page", Body=put[3])["VersionId"]
    client.delete_object(Bucket="history", Key="page", VersionId=gone)
    return [
        ("doc", marker, True, None),
        ("doc", second, False, put[1]),
        ("doc", first, False, put[0]),
        ("page", kept, True, put[3]),
    ]


def _check_versions(client: Any, expected: list[tuple[str, str, bool, bytes | None]]) -> None:
    listing = client.list_object_versions(Bucket="history")
    versions = [(v["Key"], v["VersionId"], v["IsLatest"]) for v in listing.get("Versions", [])]
    markers = [(m["Key"], m["VersionId"], m["IsLatest"]) for m in listing.get("DeleteMarkers", [])]
    assert versions == [(k, v, latest) for k, v, latest, data in expected if data is not None]
    assert markers == [(k, v, latest) for k, v, latest, data in expected if data is None]
    for key, version_id, _, data in expected:
        if data is not None:
            reply = client.get_object(Bucket="history", Key=key, VersionId=version_id)
            assert reply["Body"].read() == data, (key, version_id)


def test_losing_a_node_and_its_disk_loses_no_acknowledged_object(
    cluster_collecting: tuple[ProcessCluster, bool],
) -> None:
    cluster, collecting = cluster_collecting
    clients = {name: _boto(cluster.address(name)) for name in NODES}
    expected = _expected()
    with cluster.failure_notes("replicated metadata: kill -9 and wipe n1 under load"):
        first = clients["n1"]
        first.create_bucket(Bucket="photos")
        for key, (data, content_type, metadata) in expected.items():
            first.put_object(
                Bucket="photos", Key=key, Body=data, ContentType=content_type, Metadata=metadata
            )  # acknowledged: on a majority
        first.put_object(Bucket="photos", Key="gone", Body=b"x" * 40_000)
        first.delete_object(Bucket="photos", Key="gone")
        versions = _write_versions(first)  # acknowledged like any object

        writers = Writers(cluster.address("n1"))

        def loaded() -> None:
            assert writers.count() >= 6

        _eventually(loaded, "PUTs under load")
        cluster.kill("n1")  # with PUTs in flight
        cluster.wipe("n1")
        writers.join()
        at_kill = {name: _shard_files(cluster.info(name).data_dir) for name in ("n2", "n3")}
        check = (expected, writers.acknowledged, writers.attempted)
        for name in ("n2", "n3"):
            _eventually(lambda name=name: _check_node(clients[name], *check), f"read via {name}")
            _eventually(lambda name=name: _check_versions(clients[name], versions), name)

        cluster.start("n1")  # an empty data directory: it syncs before it serves
        _check_node(clients["n1"], *check)
        _check_versions(clients["n1"], versions)

        def settled() -> None:
            """Repair gave n1 back two shards of every live chunk; nothing live was deleted
            anywhere; without a grace period nothing else is left, with one nothing went."""
            live = _live_chunk_ids(clients["n2"])
            for name in NODES:
                held = _chunk_files(cluster.info(name).data_dir)
                assert all(held[chunk_id] == 2 for chunk_id in live), name
                if collecting:
                    assert set(held) == live, name
                elif name in at_kill:
                    assert _shard_files(cluster.info(name).data_dir) >= at_kill[name], name

        _eventually(settled, "repair and collection settled")
        for name in NODES:
            _check_node(clients[name], *check)
            _check_versions(clients[name], versions)
    for client in clients.values():
        client.close()


def test_a_multipart_upload_spans_the_nodes(tmp_path: Path) -> None:
    """Created through n1, parts through n2 and n3, completed through n2, listed and read
    through every node: an upload is metadata like any other."""
    with ProcessCluster(_spec("3600", chunk_kib="1024"), NODES, tmp_path) as cluster:
        cluster.start_all()
        clients = {name: _boto(cluster.address(name)) for name in NODES}
        with cluster.failure_notes("replicated metadata: multipart across nodes"):
            clients["n1"].create_bucket(Bucket="photos")
            upload = clients["n1"].create_multipart_upload(
                Bucket="photos", Key="big", ContentType="video/mp4", Metadata={"take": "2"}
            )["UploadId"]
            first, last = os.urandom(5 * 1024 * 1024), os.urandom(300_000)
            etags = [
                clients[name].upload_part(
                    Bucket="photos", Key="big", UploadId=upload, PartNumber=number, Body=body
                )["ETag"]
                for name, number, body in (("n2", 1, first), ("n3", 2, last))
            ]
            parts = clients["n1"].list_parts(Bucket="photos", Key="big", UploadId=upload)
            assert [part["PartNumber"] for part in parts["Parts"]] == [1, 2]
            clients["n2"].complete_multipart_upload(
                Bucket="photos",
                Key="big",
                UploadId=upload,
                MultipartUpload={
                    "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]
                },
            )
            for name in NODES:
                # At once, through every node: quorum-acknowledged metadata is readable
                # through any node (one that lacks it fetches it from a peer, or waits for
                # the push of it it is journaling).
                reply = clients[name].get_object(Bucket="photos", Key="big")
                assert reply["Body"].read() == first + last, name
                assert (reply["ContentType"], reply["Metadata"]) == ("video/mp4", {"take": "2"})

                def no_upload(name: str = name) -> None:
                    listing = clients[name].list_multipart_uploads(Bucket="photos")
                    assert not listing.get("Uploads"), name

                _eventually(no_upload, f"the upload gone on {name}")
        for client in clients.values():
            client.close()


# -- the kit's nemesis on a replicated cluster ---------------------------------------------


class AnyNodeWorkload(BlobWorkload):
    """The kit's blob workload (a writer per node) on one bucket created once, whose final
    reads go through a node other than the one that took each PUT."""

    @classmethod
    async def open(cls, endpoints: list[str], seed: int) -> BlobWorkload:
        workload = cls(endpoints, seed)
        client = workload._client(0)
        try:
            await retrying(lambda: asyncio.to_thread(client.create_bucket, workload.bucket))
        finally:
            client.close()
        return workload

    async def verify(self) -> Verdict:
        acknowledged = {op.key for op in self.history.completions(OpType.OK, "write")}
        final: list[object] = []
        for node, key in self.written:
            if key not in acknowledged:
                continue
            other = (node + 1) % len(self.endpoints)
            try:
                final.append(await retrying(lambda o=other, k=key: self._get(o, k)))
            except Exception as error:  # counted as lost, with the reason
                self.history.add(-1, OpType.INFO, "final-read", key, None, repr(error))
        return judge(self.history, final)


@pytest.fixture(scope="module")
def nemesis_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ProcessCluster, dict[str, FsyncFaults]]]:
    """One replicated cluster for every seed (each seed's workload writes a bucket of its
    own), with its fsync faults set up before the nodes start, as ``test_blob_nemesis``
    does: a cluster start per seed saved."""
    root = tmp_path_factory.mktemp("replicated-nemesis")
    with ProcessCluster(_spec("3600"), NODES, root) as cluster:
        yield cluster, {name: FsyncFaults(cluster, name) for name in cluster.names}


@pytest.mark.parametrize("seed", nemesis_seeds([9, 4]))
def test_replicated_blob_under_the_nemesis(
    nemesis_cluster: tuple[ProcessCluster, dict[str, FsyncFaults]], seed: int
) -> None:
    """Kills, restarts, pauses, failing fsyncs and wiped data directories, one node at a
    time: every acknowledged PUT reads back byte-identical through another node."""
    cluster, faults = nemesis_cluster
    kinds = [*PROCESS_FAULTS, FaultKind.WIPE, FaultKind.FSYNC_EIO]
    nemesis = Nemesis(cluster, seed=seed, kinds=kinds, steps=nemesis_steps(), fsync_faults=faults)

    async def workload() -> Workload:
        return await AnyNodeWorkload.open(cluster.addresses(), seed)

    run_under_nemesis("blob-replicated", cluster, nemesis, workload)
