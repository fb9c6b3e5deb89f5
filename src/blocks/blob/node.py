"""Assembling a node: the local shard directory, the peers' shard stores, and the store.

Theory of operation: a node keeps its own shards in ``data_dir/shards/local`` and its
metadata journal in ``data_dir/journal``. Given peers (``http://host:port`` of other
``blocks blob serve`` processes sharing a cluster token), the chunk layer's ring spreads
each chunk's shards over the local directory and the peers, on distinct nodes while there
are enough of them. Alone, a node keeps small objects inline in its journal; with peers it
erasure-codes them across the nodes like large ones (the journal is not replicated). The
node list must stay the same across restarts: the ring is a function of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from blocks.blob.peers import HttpShardStore
from blocks.blob.shards import DirectoryShardStore, ShardStore
from blocks.blob.store import DEFAULT_CHUNK_BYTES, DEFAULT_INLINE_BYTES, LocalBlobStore
from blocks.core.errors import InvalidArgument

__all__ = ["open_node"]


def open_node(
    data_dir: str | Path,
    *,
    peers: Sequence[str] = (),
    cluster_token: str | None = None,
    codec: str = "rs:4+2",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    fsync: bool = True,
) -> tuple[LocalBlobStore, DirectoryShardStore]:
    """The node's store and its local shard directory (which it also serves to peers)."""
    if peers and not cluster_token:
        raise InvalidArgument("a node with peers needs a cluster token")
    directory = Path(data_dir)
    local = DirectoryShardStore(directory / "shards" / "local", name="local", fsync=fsync)
    nodes: dict[str, ShardStore] = {"local": local}
    for url in peers:
        peer = HttpShardStore(url, cluster_token or "")
        if peer.name in nodes:
            raise InvalidArgument(f"peer {url} listed twice")
        nodes[peer.name] = peer
    store = LocalBlobStore(
        directory,
        nodes=nodes,
        codec=codec,
        chunk_bytes=chunk_bytes,
        # The journal lives on this node only: in a cluster small objects are erasure-coded
        # across the nodes like large ones rather than kept inline (see docs/blob.md).
        inline_bytes_max=0 if peers else DEFAULT_INLINE_BYTES,
        fsync=fsync,
    )
    return store, local
