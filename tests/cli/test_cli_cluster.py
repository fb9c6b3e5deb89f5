"""``blocks.cli_cluster``: the flags of a server that can be one node of a cluster."""

from __future__ import annotations

import argparse

import pytest

from blocks.cli_cluster import ClusterNode, add_cluster_node_arguments, cluster_node, data_port
from blocks.core.errors import InvalidArgument


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_cluster_node_arguments(parser, member="broker", peer_help="a peer")
    return parser.parse_args(list(argv))


def test_without_peers_it_is_a_single_server() -> None:
    args = _parse()
    assert cluster_node(args, None, member="broker") is None
    assert args.fsync == "batch" and data_port(args) == 0
    assert data_port(_parse("--data-port", "-1")) is None


def test_a_cluster_node_is_read_back_checked() -> None:
    args = _parse("--node-id", "a", "--cluster-listen", "h:1", "--peer", "b=h:2", "--peer", "c=h:3")
    node = cluster_node(args, "/data", member="broker")
    assert node == ClusterNode("a", ("h", 1), {"b": ("h", 2), "c": ("h", 3)})
    assert node.as_arguments() == {
        "node": "a",
        "cluster_listen": ("h", 1),
        "peers": {"b": ("h", 2), "c": ("h", 3)},
    }
    with pytest.raises(InvalidArgument, match="a cluster broker needs --node-id"):
        cluster_node(args, None, member="broker")
    no_name = _parse("--cluster-listen", "h:1", "--peer", "b=h:2")
    with pytest.raises(InvalidArgument, match="--node-id, --cluster-listen and --data-dir"):
        cluster_node(no_name, "/data", member="broker")
    with pytest.raises(InvalidArgument, match="--peer wants ID=HOST:PORT"):
        cluster_node(
            _parse("--node-id", "a", "--cluster-listen", "h:1", "--peer", "b"), "/d", member="x"
        )
