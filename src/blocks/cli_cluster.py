"""The ``serve`` flags of a block whose server can be one node of a replicated cluster.

Theory of operation: pubsub's broker and the queue's server both run alone by default and join
a replicated cluster when given peers; both log to disk under ``--fsync`` and serve a data
path beside gRPC (``blocks.core.data_path``). ``add_cluster_node_arguments`` adds those flags
to a ``serve`` parser; ``cluster_node`` reads them back: None for a single server, else the
node's name, replication address and peers, checked. ``data_port`` turns ``--data-port`` into
what ``build_server`` takes (None: no data path). ``build_node`` builds the one or the other
server from those flags; ``add_cluster_serve`` and ``serve_node`` are the ``serve`` verb of
such a block, parser and run.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from blocks.cli_server import (
    ServerOptions,
    add_server_arguments,
    parse_host_port,
    parse_peers,
    run_server,
    server_options,
)
from blocks.core.errors import InvalidArgument

__all__ = [
    "ClusterNode",
    "add_cluster_node_arguments",
    "add_cluster_serve",
    "build_node",
    "cluster_node",
    "data_port",
    "serve_node",
]


@dataclass(frozen=True, slots=True)
class ClusterNode:
    """Who this node is in its cluster: ``--node-id``, ``--cluster-listen``, the ``--peer``s."""

    node: str
    cluster_listen: tuple[str, int]
    peers: dict[str, tuple[str, int]]

    def as_arguments(self) -> dict[str, Any]:
        """``node``, ``cluster_listen`` and ``peers``, as a ``build_cluster_server`` takes them."""
        return {"node": self.node, "cluster_listen": self.cluster_listen, "peers": self.peers}


def add_cluster_node_arguments(
    parser: argparse.ArgumentParser, *, member: str, peer_help: str
) -> None:
    """Add ``--fsync``, ``--data-port``, ``--node-id``, ``--cluster-listen`` and repeated
    ``--peer ID=HOST:PORT`` (any peer turns replication on); ``member`` names a node in the
    help ("broker", "node"), ``peer_help`` describes one ``--peer``."""
    parser.add_argument("--fsync", choices=["always", "batch", "never"], default="batch")
    parser.add_argument(
        "--data-port",
        type=int,
        default=0,
        help="port of the framed-msgpack data path on the --listen host (0: any; -1: off)",
    )
    parser.add_argument("--node-id", default=None, help=f"this {member}'s name in a cluster")
    parser.add_argument(
        "--cluster-listen", default=None, metavar="HOST:PORT", help="replication address"
    )
    parser.add_argument(
        "--peer", action="append", default=[], metavar="ID=HOST:PORT", help=peer_help
    )


def data_port(args: argparse.Namespace) -> int | None:
    """``--data-port``: a port (0: any free one), or None for -1 and below (no data path)."""
    port: int = args.data_port
    return None if port < 0 else port


def cluster_node(
    args: argparse.Namespace, data_dir: str | None, *, member: str
) -> ClusterNode | None:
    """None without ``--peer`` (a single server); else the node, with ``InvalidArgument``
    unless ``--node-id``, ``--cluster-listen`` and a data directory are all given and the
    addresses parse."""
    if not args.peer:
        return None
    if not args.node_id or not args.cluster_listen or not data_dir:
        raise InvalidArgument(
            f"a cluster {member} needs --node-id, --cluster-listen and --data-dir"
        )
    return ClusterNode(
        args.node_id,
        parse_host_port(args.cluster_listen, "--cluster-listen"),
        parse_peers(args.peer, label="ID"),
    )


def build_node(
    args: argparse.Namespace,
    options: ServerOptions,
    *,
    member: str,
    build_server: Callable[..., tuple[Any, Any]],
    build_cluster_server: Callable[..., tuple[Any, Any]],
    **cluster_options: Any,
) -> tuple[Any, Any]:
    """What ``build_server(data_dir, ...)`` returns without ``--peer``, else what
    ``build_cluster_server(data_dir, node=..., cluster_listen=..., peers=...,
    **cluster_options)`` returns; both get the listen address, token, ``--fsync`` and
    ``--data-port``. ``InvalidArgument`` as ``cluster_node`` says."""
    cluster = cluster_node(args, options.data_dir, member=member)
    common: dict[str, Any] = {
        "host": options.host,
        "port": options.port,
        "token": options.token,
        "fsync": args.fsync,
        "data_port": data_port(args),
    }
    if cluster is None:
        return build_server(options.data_dir, **common)
    return build_cluster_server(
        options.data_dir, **cluster.as_arguments(), **cluster_options, **common
    )


def add_cluster_serve(
    verbs: Any, *, block: str, help_text: str, member: str, peer_help: str
) -> argparse.ArgumentParser:
    """The ``serve`` verb of ``blocks <block>`` for a server that runs alone or as one node of
    a cluster: its parser, with the server flags (``--data-dir`` optional, no TLS) and
    ``add_cluster_node_arguments``'s."""
    serve: argparse.ArgumentParser = verbs.add_parser("serve", help=help_text)
    add_server_arguments(serve, block=block, data_dir="optional", tls=False)
    add_cluster_node_arguments(serve, member=member, peer_help=peer_help)
    return serve


def serve_node(
    args: argparse.Namespace,
    *,
    member: str,
    what: str,
    build_server: Callable[..., tuple[Any, Any]],
    build_cluster_server: Callable[..., tuple[Any, Any]],
    **cluster_options: Any,
) -> int:
    """Run the server ``build_node`` builds from the flags until signalled (``run_server``);
    the start-up line reads ``<what> on <address>`` and names ``--node-id``."""
    options = server_options(args)
    return run_server(
        options,
        lambda: build_node(
            args,
            options,
            member=member,
            build_server=build_server,
            build_cluster_server=build_cluster_server,
            **cluster_options,
        ),
        lambda server, _: (f"{what} on {server.address}", {"node": args.node_id}),
    )
