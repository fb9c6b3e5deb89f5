"""Real processes: restarting a node of a three-node cluster loses no acknowledged object.

Each node takes PUTs; metadata is replicated (a cluster's default), so every node serves
every object, and every node stores shards of every object. A node restarted by SIGTERM or
kill -9 must neither delete its peers' shards nor lose its own.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from blocks.blob.client import S3Client, S3ClientError

from .process_cluster import ACCESS, SECRET, Node, cluster_nodes, start_all, stop_all

pytestmark = pytest.mark.process

OBJECTS_PER_NODE = 5  # two chunks each: 30 chunks, 60 shards a node


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[Node]]:
    started = cluster_nodes(tmp_path, 3, ["--chunk-kib", "16", "--no-fsync"])
    try:
        start_all(started)
        yield started
    finally:
        stop_all(started)


def _check_every_object(
    nodes: list[Node], written: dict[str, bytes], *, down: int | None = None
) -> None:
    """Every object, read through every node but ``down``."""
    clients = [S3Client(node.endpoint, ACCESS, SECRET) for node in nodes]
    try:
        for key, data in written.items():
            for reader, client in enumerate(clients):
                if reader != down:
                    assert client.get_object("bkt", key) == data, (reader, key)
    finally:
        for client in clients:
            client.close()


def test_restarting_any_node_loses_no_acknowledged_object(nodes: list[Node]) -> None:
    written: dict[str, bytes] = {}
    for owner, node in enumerate(nodes):
        client = S3Client(node.endpoint, ACCESS, SECRET)
        if owner == 0:
            client.create_bucket("bkt")  # one bucket of the cluster, seen by every node
        for n in range(OBJECTS_PER_NODE):
            data = os.urandom(20_000 + 997 * n)  # two chunks each
            client.put_object("bkt", f"n{owner}/k{n}", data)  # acknowledged
            written[f"n{owner}/k{n}"] = data
        client.close()
    shard_counts = [len(node.shard_files()) for node in nodes]
    # rs:4+2 over three nodes: two shards of every chunk on every node.
    assert shard_counts == [2 * 2 * 3 * OBJECTS_PER_NODE] * 3
    _check_every_object(nodes, written)

    nodes[0].stop(signal.SIGTERM)
    nodes[0].start()
    assert [len(node.shard_files()) for node in nodes] == shard_counts
    _check_every_object(nodes, written)

    nodes[1].stop(signal.SIGKILL)
    # With one node down, the other two still serve every object (the down node's too),
    # each decoded from four shards.
    _check_every_object(nodes, written, down=1)
    nodes[1].start()
    assert [len(node.shard_files()) for node in nodes] == shard_counts
    _check_every_object(nodes, written)

    nodes[2].stop(signal.SIGKILL)
    nodes[2].start()
    assert [len(node.shard_files()) for node in nodes] == shard_counts
    _check_every_object(nodes, written)

    # The same bytes stored under two keys through two nodes: deleting one object (through
    # a third node) leaves the other whole on every node, and the deleted one gone from all.
    same = os.urandom(30_000)
    clients = [S3Client(node.endpoint, ACCESS, SECRET) for node in nodes]
    clients[0].put_object("bkt", "same-a", same)
    clients[1].put_object("bkt", "same-b", same)
    clients[2].delete_object("bkt", "same-a")
    for client in clients:
        assert client.get_object("bkt", "same-b") == same
        with pytest.raises(S3ClientError) as missing:
            client.get_object("bkt", "same-a")
        assert missing.value.status == 404
        client.close()
