"""Assembling a node: the local shard directory, the peers' shard stores, and the store.

Theory of operation: a node opened by ``open_node`` (alone, or an old cluster's node kept on
per-node metadata) keeps its own shards in ``data_dir/shards/local`` and its
metadata journal in ``data_dir/journal``. Given peers (``http://host:port`` of other
``blocks blob serve`` processes sharing a cluster token), the chunk layer's ring spreads
each chunk's shards over the local directory and the peers, on distinct nodes while there
are enough of them. Alone, a node keeps small objects inline in its journal; with peers it
erasure-codes them across the nodes like large ones (the journal is not replicated). The
node list must stay the same across restarts: the ring is a function of it.

Each node has an id (``data_dir/node-id``, 16 random hex characters made at the first open):
peers keep its shards in a namespace of that name (``peer_protocol.ShardHost``), so a node only ever
deletes shards it wrote itself. Orphans are collected from ``shards/local`` alone, never from
peers (see docs/blob.md, "Garbage collection"): a new data directory is a new id, and the
shards the old one left on peers stay there until metadata is replicated.

A cluster's node (``blocks blob serve`` with ``--peer``) is opened by ``open_replica``, unless
``--no-replicate-metadata`` keeps an old per-node data directory: a full metadata replica
(``replica``, ``replication``): every node names every node by its address (``self_address``
for itself), so the ring places a chunk's shards the same way whichever node reads it, and
every node's shards live in one shared namespace (``CLUSTER_NAMESPACE``), kept on each disk
in ``shards/peers/<CLUSTER_NAMESPACE>``, which is also the node's own shard directory.
Nothing is deleted when a count reaches zero; the cluster collector (``gc``) does it. A
data directory written in one mode is refused by the other (no migration between them).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from blocks.blob.cluster.peer_protocol import PeerChannel, PeerShardStore, ShardHost, check_writer
from blocks.blob.cluster.peers import HttpPeerChannel
from blocks.blob.cluster.replica import ReplicatedBlobStore
from blocks.blob.cluster.replication import GC_GRACE_S, SYNC_INTERVAL_S, Replicator
from blocks.blob.storage.shards import DirectoryShardStore, ShardStore
from blocks.blob.store import DEFAULT_CHUNK_BYTES, DEFAULT_INLINE_BYTES, LocalBlobStore
from blocks.core.errors import FailedPrecondition, InvalidArgument
from blocks.core.files import fsync_directory

__all__ = ["CLUSTER_NAMESPACE", "node_id", "open_node", "open_replica"]

CLUSTER_NAMESPACE = "0" * 16
"""The one shard namespace of a cluster whose metadata is replicated (node ids are random
16-hex strings, so none is this one but by a 2**-64 chance)."""


def node_id(data_dir: Path) -> str:
    """This node's id, read from ``data_dir/node-id``, made (durably) on first use."""
    path = data_dir / "node-id"
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        data_dir.mkdir(parents=True, exist_ok=True)
        text = os.urandom(8).hex()
        temporary = data_dir / "node-id.tmp"
        with open(temporary, "w", encoding="ascii") as file:
            file.write(text + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        fsync_directory(data_dir)
    check_writer(text)
    return text


def _check_layout(directory: Path, *, replicated: bool) -> None:
    """Refuse a data directory written in the other mode: the two place shards under
    different names and namespaces, so one would not find the other's objects (there is no
    migration between them)."""
    shared = (directory / "shards" / "peers" / CLUSTER_NAMESPACE).is_dir()
    used = (directory / "journal").is_dir()
    if replicated and used and not shared:
        raise FailedPrecondition(
            f"{directory} holds per-node metadata (written alone or before a cluster's "
            "metadata was replicated by default): serve it with --no-replicate-metadata; "
            "it cannot be converted in place: copy its objects into a new cluster through "
            "S3 (aws s3 sync or rclone sync)"
        )
    if not replicated and shared:
        raise FailedPrecondition(
            f"{directory} holds a cluster's replicated metadata: serve it with its --peer "
            "list and without --no-replicate-metadata (it cannot be served alone)"
        )


def _add_peers(
    nodes: dict[str, ShardStore],
    peers: Sequence[str],
    connect: Callable[[str], PeerChannel],
    namespace: str,
) -> dict[str, PeerChannel]:
    """Add to ``nodes`` each peer's shards in ``namespace`` there; their channels by name.
    ``InvalidArgument`` for a peer listed twice or naming this node."""
    channels: dict[str, PeerChannel] = {}
    for peer in peers:
        channel = connect(peer)
        if channel.name in nodes:
            raise InvalidArgument(f"peer {peer} listed twice (or is this node)")
        nodes[channel.name] = PeerShardStore(channel, namespace)
        channels[channel.name] = channel
    return channels


def open_node(
    data_dir: str | Path,
    *,
    peers: Sequence[str] = (),
    cluster_token: str | None = None,
    codec: str = "rs:4+2",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    fsync: bool = True,
) -> tuple[LocalBlobStore, ShardHost]:
    """The node's store and the shard directories it serves to its peers."""
    if peers and not cluster_token:
        raise InvalidArgument("a node with peers needs a cluster token")
    directory = Path(data_dir)
    _check_layout(directory, replicated=False)
    local = DirectoryShardStore(directory / "shards" / "local", name="local", fsync=fsync)
    nodes: dict[str, ShardStore] = {"local": local}
    _add_peers(
        nodes,
        peers,
        functools.partial(HttpPeerChannel, token=cluster_token or ""),
        node_id(directory),
    )
    store = LocalBlobStore(
        directory,
        nodes=nodes,
        codec=codec,
        chunk_bytes=chunk_bytes,
        # The journal lives on this node only: in a cluster small objects are erasure-coded
        # across the nodes like large ones rather than kept inline (see docs/blob.md).
        inline_bytes_max=0 if peers else DEFAULT_INLINE_BYTES,
        fsync=fsync,
        owned_nodes=("local",),
    )
    return store, ShardHost(directory / "shards" / "peers", local, fsync=fsync)


def open_replica(
    data_dir: str | Path,
    *,
    self_address: str,
    peers: Sequence[str],
    cluster_token: str,
    codec: str = "rs:4+2",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    fsync: bool = True,
    sync_interval_s: float = SYNC_INTERVAL_S,
    gc_grace_s: float = GC_GRACE_S,
    connect: Callable[[str], PeerChannel] | None = None,
) -> tuple[ReplicatedBlobStore, ShardHost, Replicator]:
    """A node of a cluster with replicated metadata (see the module docstring): its store,
    the shard directories it serves, and its replicator (``start()`` it once serving).

    ``peers`` are ``http://host:port`` URLs reached over HTTP, or, with ``connect``, names
    that ``connect`` turns into channels (``peer_transport.TransportPeerChannel`` over any
    ``core.Transport``); ``self_address`` is this node's name the same way."""
    if not peers or not cluster_token:
        raise InvalidArgument("replicated metadata needs --peer and a cluster token")
    host, _, port = self_address.rpartition(":")
    if connect is None and (not host or not port.isdigit() or int(port) == 0):
        raise InvalidArgument(f"a replica needs its own host:port, got {self_address!r}")
    if connect is None:
        connect = functools.partial(HttpPeerChannel, token=cluster_token)
    directory = Path(data_dir)
    _check_layout(directory, replicated=True)
    shared = directory / "shards" / "peers" / CLUSTER_NAMESPACE
    local = DirectoryShardStore(shared, name=self_address, fsync=fsync)
    nodes: dict[str, ShardStore] = {self_address: local}
    writer = node_id(directory)
    remote = _add_peers(nodes, peers, connect, CLUSTER_NAMESPACE)
    store = ReplicatedBlobStore(
        directory,
        nodes=nodes,
        codec=codec,
        chunk_bytes=chunk_bytes,
        inline_bytes_max=0,  # bodies stay out of the replicated records
        fsync=fsync,
        owned_nodes=(),  # collection is the cluster's (gc), never this node's alone
        node_id=writer,
    )
    replicator = Replicator(
        store, remote, local, sync_interval_s=sync_interval_s, gc_grace_s=gc_grace_s
    )
    store.replicator = replicator
    shard_host = ShardHost(directory / "shards" / "peers", local, fsync=fsync)
    shard_host.share(CLUSTER_NAMESPACE, local)
    shard_host.records = store
    return store, shard_host, replicator
