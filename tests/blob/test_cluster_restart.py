"""Real processes: restarting a node of a three-node cluster loses no acknowledged object.

Each node takes PUTs (each node keeps the metadata of the objects it took: #15 item 2
replicates it); every node stores shards of every object. A node restarted by SIGTERM or
kill -9 must neither delete its peers' shards nor lose its own.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from blocks.blob.client import S3Client

from .process_cluster import ACCESS, SECRET, Node, cluster_nodes, stop_all

pytestmark = pytest.mark.process

OBJECTS_PER_NODE = 10


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[Node]]:
    started = cluster_nodes(tmp_path, 3, ["--chunk-kib", "16", "--no-fsync"])
    try:
        for node in started:
            node.start()
        yield started
    finally:
        stop_all(started)


def _check_every_object(nodes: list[Node], written: dict[tuple[int, str], bytes]) -> None:
    clients = [S3Client(node.endpoint, ACCESS, SECRET) for node in nodes]
    try:
        for (owner, key), data in written.items():
            assert clients[owner].get_object("bkt", key) == data, (owner, key)
    finally:
        for client in clients:
            client.close()


def test_restarting_any_node_loses_no_acknowledged_object(nodes: list[Node]) -> None:
    written: dict[tuple[int, str], bytes] = {}
    for owner, node in enumerate(nodes):
        client = S3Client(node.endpoint, ACCESS, SECRET)
        client.create_bucket("bkt")
        for n in range(OBJECTS_PER_NODE):
            data = os.urandom(20_000 + 997 * n)  # two chunks each
            client.put_object("bkt", f"k{n}", data)  # acknowledged
            written[(owner, f"k{n}")] = data
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
    # With one node down, the other two still decode their objects from four shards.
    _check_every_object(nodes, {k: v for k, v in written.items() if k[0] != 1})
    nodes[1].start()
    assert [len(node.shard_files()) for node in nodes] == shard_counts
    _check_every_object(nodes, written)

    nodes[2].stop(signal.SIGKILL)
    nodes[2].start()
    assert [len(node.shard_files()) for node in nodes] == shard_counts
    _check_every_object(nodes, written)

    # The same bytes stored through two nodes are two sets of shards: deleting one object
    # leaves the other whole.
    same = os.urandom(30_000)
    first, second = (S3Client(node.endpoint, ACCESS, SECRET) for node in nodes[:2])
    first.put_object("bkt", "same", same)
    second.put_object("bkt", "same", same)
    first.delete_object("bkt", "same")
    assert second.get_object("bkt", "same") == same
    first.close()
    second.close()
