"""Shards on other nodes: a small HTTP shard protocol between ``blocks blob serve`` processes.

Theory of operation. In a cluster the node a client talks to keeps that object's metadata
and coordinates; every node, itself included, stores shards. A peer exposes shard
directories under ``/_shards/`` (bucket names cannot start with ``_``, so it never collides
with S3 paths), guarded by a shared bearer token. Each writing node has its own namespace on
every peer, named by its node id (``node.node_id``), so that what one node deletes can never
be a shard another node's metadata names (chunks are content-addressed: two nodes storing the
same bytes would otherwise share the files):

    PUT    /_shards/<writer>/<chunk id>/<index>   body = the framed shard
    GET    /_shards/<writer>/<chunk id>/<index>   200 with the shard, or 404
    DELETE /_shards/<writer>/<chunk id>           every shard of the chunk in that namespace
    GET    /_shards/<writer>                      newline-separated chunk ids
    *      /_shards/_meta/...                     metadata replication (``replication``)

A peer keeps writer ``W``'s shards in ``shards/peers/W``; its own shards stay in
``shards/local``, where peers never write (``ShardHost``). A GET that misses in the
namespace falls back to ``shards/local`` (read-only: shards stored there by peers before
namespaces existed stay readable; the reader verifies every shard anyway).

``HttpShardStore`` is the client side: a ``ShardStore`` whose calls become those requests.
A peer that cannot be reached raises ``Unavailable``, which the chunk layer treats like a lost
shard (reads decode from the other nodes, writes fail the upload). Shards are verified by the
reader, never trusted from the peer: a peer can lose data but cannot make us return wrong
bytes. Without a token the shard routes answer 404 (the node takes part in no cluster).
"""

from __future__ import annotations

import hmac
import http.client
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

from blocks.blob.s3.http import RequestHead, Response
from blocks.blob.storage.shards import DirectoryShardStore, ShardStore
from blocks.core.errors import InvalidArgument, PeerError, Unavailable

__all__ = [
    "META_SEGMENT",
    "SHARD_PREFIX",
    "WRITERS_MAX",
    "HttpShardStore",
    "MetaHandler",
    "ShardHost",
    "handle_shard_request",
]

SHARD_PREFIX = "/_shards"
SHARD_TIMEOUT_S = 10.0
WRITERS_MAX = 256
"""Namespaces a node keeps open at once (one per writing peer); past it, 503."""
_WRITER = re.compile(r"^[0-9a-f]{16}$")
META_SEGMENT = "_meta"
MetaHandler = Callable[[str, list[str], bytes], Response]
"""Serves ``/_shards/_meta/<parts>``: (method, parts, body) -> response."""


def check_writer(writer: str) -> None:
    """A node id: 16 lowercase hex characters (it names a directory on every peer)."""
    if not _WRITER.match(writer):
        raise InvalidArgument(f"a node id is 16 lowercase hex characters, got {writer!r}")


class HttpShardStore:
    """A peer node's shards over HTTP (one keep-alive connection per calling thread)."""

    def __init__(
        self, url: str, token: str, writer: str, *, timeout_s: float = SHARD_TIMEOUT_S
    ) -> None:
        check_writer(writer)
        self._writer = writer
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or parts.port is None:
            raise InvalidArgument(f"peer must look like http://host:port, got {url!r}")
        self.name = f"{parts.hostname}:{parts.port}"
        self._host, self._port = parts.hostname, parts.port
        self._token = token
        self._timeout_s = timeout_s
        self._local = threading.local()

    def _request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        return self.call(method, f"/{self._writer}{path}", body)

    def call(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """One request to ``/_shards<path>`` on the peer: (status, body); ``Unavailable``
        when the peer cannot be reached."""
        headers = {"Authorization": f"Bearer {self._token}", "Content-Length": str(len(body))}
        for attempt in range(2):  # a kept-alive connection the peer closed gets one retry
            connection = getattr(self._local, "connection", None)
            if connection is None:
                connection = http.client.HTTPConnection(
                    self._host, self._port, timeout=self._timeout_s
                )
                self._local.connection = connection
            try:
                target = f"{SHARD_PREFIX}{path}"
                connection.request(method, target, body=body, headers=headers)
                response = connection.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                self._local.connection = None
                if attempt == 1:
                    raise Unavailable(f"peer {self.name} unreachable: {error}") from error
        raise AssertionError("unreachable")

    def put_shard(self, chunk_id: str, index: int, data: bytes) -> None:
        status, _ = self._request("PUT", f"/{chunk_id}/{index}", data)
        if status != 200:
            raise Unavailable(f"peer {self.name} refused a shard: HTTP {status}")

    def get_shard(self, chunk_id: str, index: int) -> bytes | None:
        status, body = self._request("GET", f"/{chunk_id}/{index}")
        if status == 404:
            return None
        if status != 200:
            raise Unavailable(f"peer {self.name} failed a read: HTTP {status}")
        return body

    def delete_chunk(self, chunk_id: str) -> None:
        status, _ = self._request("DELETE", f"/{chunk_id}")
        if status not in (200, 204):
            raise Unavailable(f"peer {self.name} failed a delete: HTTP {status}")

    def chunk_ids(self) -> Iterator[str]:
        status, body = self._request("GET", "")
        if status != 200:
            raise Unavailable(f"peer {self.name} failed a listing: HTTP {status}")
        return iter([line for line in body.decode("ascii", "replace").split("\n") if line])


class ShardHost:
    """The shard directories a node serves to its peers: one per writer under ``root``
    (created on first use, at most ``WRITERS_MAX``), and its own (``own``), read-only."""

    def __init__(self, root: Path, own: ShardStore, *, fsync: bool = True) -> None:
        self.root = root
        self.own = own
        self.fsync = fsync
        self._writers: dict[str, DirectoryShardStore] = {}
        self._lock = threading.Lock()
        self.writers_refused = 0
        self.meta: MetaHandler | None = None
        """The metadata replication routes, when this node replicates metadata."""

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


def handle_shard_request(
    head: RequestHead, body: bytes, host: ShardHost, token: str | None
) -> Response:
    """Serve one ``/_shards`` request from ``host`` (runs in a worker thread)."""
    given = head.headers.get("authorization", "")
    if not token or not hmac.compare_digest(given, f"Bearer {token}"):
        return Response(404)
    parts = [p for p in head.raw_path[len(SHARD_PREFIX) :].split("/") if p]
    try:
        if not parts:
            return Response(400)
        if parts[0] == META_SEGMENT:
            return Response(404) if host.meta is None else host.meta(head.method, parts[1:], body)
        local = host.for_writer(parts[0])
        parts = parts[1:]
        if head.method == "GET" and not parts:
            return Response(200, {}, "\n".join(local.chunk_ids()).encode("ascii"))
        if head.method == "DELETE" and len(parts) == 1:
            local.delete_chunk(parts[0])
            return Response(204)
        if len(parts) == 2 and parts[1].isdigit():
            chunk_id, index = parts[0], int(parts[1])
            if head.method == "PUT":
                local.put_shard(chunk_id, index, body)
                return Response(200)
            if head.method == "GET":
                shard = local.get_shard(chunk_id, index)
                if shard is None:  # stored before namespaces existed (see the docstring)
                    shard = host.own.get_shard(chunk_id, index)
                return Response(404) if shard is None else Response(200, {}, shard)
    except InvalidArgument:
        return Response(400)
    except Unavailable:
        return Response(503)
    except (OSError, PeerError):
        return Response(500)
    return Response(400)
