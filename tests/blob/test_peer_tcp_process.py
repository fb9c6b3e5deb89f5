"""Real processes whose peer traffic rides ``core.Transport`` (#17): three ``blocks blob
serve`` nodes started with ``--peer-listen``, each naming the others by ``tcp://`` address,
so shards and metadata travel as framed msgpack over ``TcpTransport`` instead of HTTP on
the S3 port (the ring names the nodes by those addresses: an HTTP peer call would reach
nothing). Every object reads back byte-identical through every node; with one node killed
(kill -9) through the other two; after it restarts, through it too."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from blocks.blob.client import S3Client

from .process_cluster import ACCESS, SECRET, Node, stop_all, tcp_cluster_nodes

pytestmark = pytest.mark.process


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[Node]]:
    made = tcp_cluster_nodes(tmp_path, 3, ["--chunk-kib", "16", "--no-fsync"])
    try:
        for node in made:  # one after another: a node launched with its peers (start_all)
            node.start()  # can refuse writes for a moment while its TCP peers connect
        yield made
    finally:
        stop_all(made)


def _read_all(nodes: list[Node], written: dict[str, bytes], readers: list[int]) -> None:
    for reader in readers:
        client = S3Client(nodes[reader].endpoint, ACCESS, SECRET)
        try:
            for key, data in written.items():
                assert client.get_object("bkt", key) == data, (reader, key)
        finally:
            client.close()


def test_a_cluster_on_tcp_peers_serves_every_object_through_every_node(nodes: list[Node]) -> None:
    client = S3Client(nodes[0].endpoint, ACCESS, SECRET)
    try:
        client.create_bucket("bkt")
        written = {f"k{n}": os.urandom(20_000 + 997 * n) for n in range(6)}  # two chunks each
        for key, data in written.items():
            client.put_object("bkt", key, data)
    finally:
        client.close()
    _read_all(nodes, written, [0, 1, 2])
    nodes[2].stop(signal.SIGKILL)
    _read_all(nodes, written, [0, 1])  # four of six shards, from two nodes
    nodes[2].start()
    _read_all(nodes, written, [2])
    assert nodes[2].shard_files(), "the restarted node holds no shard"
