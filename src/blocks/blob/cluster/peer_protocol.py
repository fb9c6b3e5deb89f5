"""What blob nodes say to each other, whatever carries it: messages, the serving side, shards.

Theory of operation. Every call one node makes of another is one msgpack message, a list
``[op, *args]``, answered by one msgpack value or a ``BlocksError`` (the shape of
``blocks.core.transport``'s requests, so any ``Transport`` carries it as it is):

    ["shard.put", writer, chunk_id, index, data]   -> None, once the shard is durable
    ["shard.get", writer, chunk_id, index]         -> bytes, or None if the node has none
    ["shard.delete", writer, chunk_id]             -> None (every shard of the chunk)
    ["shard.list", writer]                         -> [chunk id, ...]
    ["meta.apply", [record, ...]]                  -> None once all are durable there;
                                                      NotFound if one names a bucket or
                                                      upload the peer lacks
    ["meta.snapshot"]                              -> [record, ...]: the live metadata
    ["meta.key", bucket, key]                      -> [record, ...] of that key
    ["meta.bucket", bucket]                        -> [record] of that bucket, or []
    ["meta.upload", upload_id]                     -> [record, ...] of that upload
    ["meta.referenced", [chunk id, ...]]           -> the chunk ids the peer references

A ``PeerChannel`` carries messages to one peer: over HTTP between ``blocks blob serve``
processes (``peers.HttpPeerChannel``: the S3 port, the cluster token) or over any
``blocks.core.transport.Transport`` (``peer_transport``: ``MemoryNetwork`` in tests and
simulations, ``TcpTransport`` between processes that run one). ``serve_message`` answers a
message from a node's ``ShardHost``; ``PeerShardStore`` is the ``ShardStore`` the chunk layer
uses for a peer's disk.

Namespaces: each writing node has its own shard namespace on every peer, named by its node
id (16 hex characters): what one node deletes can never be a shard another node's metadata
names (chunks are content-addressed, so two nodes storing the same bytes would otherwise
share files). A cluster with replicated metadata uses one shared namespace
(``node.CLUSTER_NAMESPACE``), which is also each node's own shard directory. A peer keeps
writer ``W``'s shards in ``shards/peers/W``; a ``shard.get`` that misses there falls back to
the node's own directory (read-only: shards stored before namespaces existed stay readable;
the reader verifies every shard anyway, so a peer can lose data but never make a reader
return wrong bytes).

Bounds: a message is bounded by its carrier (``PEER_MESSAGE_BYTES_MAX`` over HTTP, the
transport's frame limit otherwise); a shard is a chunk's ``1/k`` plus a header, so the
chunk size bounds it. At most ``WRITERS_MAX`` namespaces are open on a node.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from blocks.blob.storage.shards import DirectoryShardStore, ShardStore
from blocks.core.errors import BlocksError, InvalidArgument, Unavailable

if TYPE_CHECKING:
    from blocks.blob.cluster.replica_peers import PeerRecordsMixin

__all__ = [
    "META_BODY_BYTES_MAX",
    "PEER_MESSAGE_BYTES_MAX",
    "WRITERS_MAX",
    "PeerChannel",
    "PeerShardStore",
    "ShardHost",
    "check_writer",
    "serve_message",
]

META_BODY_BYTES_MAX = 64 * 1024 * 1024
"""Largest snapshot a node sends (past it, ``Unavailable``, counted in ``bodies_refused``)."""
PEER_MESSAGE_BYTES_MAX = 80 * 1024 * 1024
"""Largest message or reply between two nodes over HTTP (a snapshot's records are bounded
by ``META_BODY_BYTES_MAX``, a shard by the chunk size)."""
WRITERS_MAX = 256
"""Namespaces a node keeps open at once (one per writing peer); past it, ``Unavailable``."""
_WRITER = re.compile(r"^[0-9a-f]{16}$")


def check_writer(writer: str) -> None:
    """A node id: 16 lowercase hex characters (it names a directory on every peer)."""
    if not isinstance(writer, str) or not _WRITER.match(writer):
        raise InvalidArgument(f"a node id is 16 lowercase hex characters, got {writer!r}")


class PeerChannel(Protocol):
    """Messages to one peer node (see the module docstring for the messages)."""

    name: str
    """The peer's name, as the ring and the logs know it (``host:port``)."""

    def call(self, message: list[Any]) -> Any:
        """Send ``message`` and block until its reply. Raises ``Unavailable`` when the peer
        cannot be reached or did not answer in time (the call may or may not have run), and
        the peer's own ``BlocksError`` class when it refused the call. Thread-safe."""
        ...


class PeerShardStore:
    """A peer node's shards in ``writer``'s namespace there, as a ``ShardStore``: whatever
    the peer refuses or fails is ``Unavailable`` here, which the chunk layer treats as a
    lost shard."""

    def __init__(self, channel: PeerChannel, writer: str) -> None:
        check_writer(writer)
        self.channel = channel
        self.name = channel.name
        self._writer = writer

    def _call(self, message: list[Any]) -> Any:
        try:
            return self.channel.call(message)
        except Unavailable:
            raise
        except BlocksError as error:
            raise Unavailable(f"peer {self.name} refused {message[0]}: {error}") from error

    def put_shard(self, chunk_id: str, index: int, data: bytes) -> None:
        self._call(["shard.put", self._writer, chunk_id, index, bytes(data)])

    def get_shard(self, chunk_id: str, index: int) -> bytes | None:
        shard = self._call(["shard.get", self._writer, chunk_id, index])
        if shard is not None and not isinstance(shard, bytes):
            raise Unavailable(f"peer {self.name} answered a read with {type(shard).__name__}")
        return shard

    def delete_chunk(self, chunk_id: str) -> None:
        self._call(["shard.delete", self._writer, chunk_id])

    def chunk_ids(self) -> Iterator[str]:
        ids = self._call(["shard.list", self._writer])
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise Unavailable(f"peer {self.name} answered a listing with a malformed value")
        return iter(ids)


class ShardHost:
    """What a node serves to its peers: the shard directories, one per writer under ``root``
    (created on first use, at most ``WRITERS_MAX``), its own (``own``, read-only), and its
    metadata replica (``records``) when the cluster replicates metadata."""

    def __init__(self, root: Path, own: ShardStore, *, fsync: bool = True) -> None:
        self.root = root
        self.own = own
        self.fsync = fsync
        self._writers: dict[str, DirectoryShardStore] = {}
        self._lock = threading.Lock()
        self.writers_refused = 0
        self.records: PeerRecordsMixin | None = None
        """The metadata replica the ``meta.*`` messages reach; ``None``: they are refused."""
        self.bodies_refused = 0
        """Snapshots refused for being larger than ``replication.META_BODY_BYTES_MAX``."""

    def share(self, writer: str, store: DirectoryShardStore) -> None:
        """Serve ``writer``'s namespace from ``store`` (a cluster's shared namespace is the
        node's own shard directory: one object, so no second one tidies its temporaries)."""
        check_writer(writer)
        with self._lock:
            self._writers[writer] = store

    def for_writer(self, writer: str) -> DirectoryShardStore:
        """Writer ``writer``'s namespace; ``InvalidArgument`` for a malformed id,
        ``Unavailable`` past ``WRITERS_MAX`` namespaces."""
        check_writer(writer)
        with self._lock:
            store = self._writers.get(writer)
            if store is None:
                if len(self._writers) >= WRITERS_MAX:
                    self.writers_refused += 1
                    raise Unavailable(f"more than {WRITERS_MAX} writers")
                store = DirectoryShardStore(self.root / writer, name=writer, fsync=self.fsync)
                store.remove_temporaries()
                self._writers[writer] = store
            return store


_ARITY = {
    "shard.put": 5,
    "shard.get": 4,
    "shard.delete": 3,
    "shard.list": 2,
    "meta.apply": 2,
    "meta.snapshot": 1,
    "meta.key": 3,
    "meta.bucket": 2,
    "meta.upload": 2,
    "meta.referenced": 2,
}


def serve_message(host: ShardHost, message: Any) -> Any:
    """Answer one peer message from ``host`` (blocking: it may write and flush a shard or
    journal records; callers run it on a worker thread). Raises ``InvalidArgument`` for a
    malformed message, ``NotFound`` for records naming what this node lacks, ``Unavailable``
    when the node cannot take it (too many writers, metadata not replicated here, a disk
    error)."""
    try:
        return _serve(host, message)
    except OSError as error:
        raise Unavailable(f"disk error: {error}") from error


def _serve(host: ShardHost, message: Any) -> Any:
    if (
        not isinstance(message, list)
        or not message
        or not isinstance(message[0], str)
        or _ARITY.get(message[0]) != len(message)
    ):
        raise InvalidArgument("expected [op, *args] with a known op and its arguments")
    op, args = message[0], message[1:]
    if op.startswith("meta."):
        return _serve_meta(host, op, args)
    shards = host.for_writer(args[0])
    if op == "shard.list":
        return list(shards.chunk_ids())
    chunk_id = _text(args[1])
    if op == "shard.delete":
        shards.delete_chunk(chunk_id)
        return None
    index = args[2]
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise InvalidArgument(f"a shard index is an int >= 0, got {index!r}")
    if op == "shard.put":
        data = args[3]
        if not isinstance(data, bytes):
            raise InvalidArgument("a shard is a byte string")
        shards.put_shard(chunk_id, index, data)
        return None
    shard = shards.get_shard(chunk_id, index)
    if shard is None:  # stored before namespaces existed (see the module docstring)
        shard = host.own.get_shard(chunk_id, index)
    return shard


def _serve_meta(host: ShardHost, op: str, args: list[Any]) -> Any:
    store = host.records
    if store is None:
        raise Unavailable("this node does not replicate metadata")
    if op == "meta.apply":
        for record in _bytes_list(args[0]):
            store.apply_remote(record)
        return None
    if op == "meta.snapshot":
        records = list(store.snapshot_records())
        if sum(len(record) for record in records) > META_BODY_BYTES_MAX:
            host.bodies_refused += 1
            raise Unavailable(f"snapshot above {META_BODY_BYTES_MAX} bytes")
        return records
    if op == "meta.key":
        return store.key_records(_text(args[0]), _text(args[1]))
    if op == "meta.bucket":
        return store.bucket_records(_text(args[0]))
    if op == "meta.upload":
        return store.upload_records(_text(args[0]))
    asked = args[0]
    if not isinstance(asked, list) or not all(isinstance(c, str) for c in asked):
        raise InvalidArgument("expected a list of chunk ids")
    return store.referenced(asked)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"expected a string, got {type(value).__name__}")
    return value


def _bytes_list(value: Any) -> list[bytes]:
    if not isinstance(value, list) or not all(isinstance(r, bytes) for r in value):
        raise InvalidArgument("expected a list of byte strings")
    return value
