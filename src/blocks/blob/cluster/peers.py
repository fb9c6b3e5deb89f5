"""The peer messages over HTTP, between ``blocks blob serve`` processes on their S3 ports.

Theory of operation. A node's S3 port also answers ``POST /_shards`` (bucket names cannot
start with ``_``, so it never collides with S3 paths), guarded by the cluster's bearer
token. The body is one peer message (``peer_protocol``: msgpack ``[op, *args]``); the answer
is ``200`` with the msgpack reply, or an error status whose body is the error as
``blocks.core.transport.error_to_wire`` encodes it, raised again at the caller with its class.
Without a token the route answers 404 with an empty body (the node takes part in no
cluster).

``HttpPeerChannel`` is the calling side: one keep-alive connection per calling thread, a
connection the peer closed gets one retry, and a peer that cannot be reached raises
``Unavailable`` (which the chunk layer treats like a lost shard: reads decode from the other
nodes, writes fail the upload).

Why HTTP stays beside ``peer_transport`` (any ``core.Transport``): a process node is named
by its S3 address (``--peer http://host:port``) and listens on that port alone; the same
messages go over ``MemoryNetwork`` in tests and simulations.
"""

from __future__ import annotations

import hmac
import http.client
import threading
from typing import Any
from urllib.parse import urlsplit

from blocks.blob.cluster.peer_protocol import (
    PEER_MESSAGE_BYTES_MAX,
    WRITERS_MAX,
    PeerShardStore,
    ShardHost,
    check_writer,
    serve_message,
)
from blocks.blob.s3.http import RequestHead, Response
from blocks.core.codec import pack, unpack
from blocks.core.errors import BlocksError, InvalidArgument, Unavailable
from blocks.core.transport import error_from_wire, error_to_wire

__all__ = [
    "SHARD_PREFIX",
    "WRITERS_MAX",
    "HttpPeerChannel",
    "ShardHost",
    "check_writer",
    "handle_shard_request",
    "http_shard_store",
]

SHARD_PREFIX = "/_shards"
SHARD_TIMEOUT_S = 10.0
_STATUS = {"InvalidArgument": 400, "NotFound": 409, "Unavailable": 503}


class HttpPeerChannel:
    """Peer messages to one ``blocks blob serve`` process (see the module docstring)."""

    def __init__(self, url: str, token: str, *, timeout_s: float = SHARD_TIMEOUT_S) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or parts.port is None:
            raise InvalidArgument(f"peer must look like http://host:port, got {url!r}")
        self.name = f"{parts.hostname}:{parts.port}"
        self._host, self._port = parts.hostname, parts.port
        self._token = token
        self._timeout_s = timeout_s
        self._local = threading.local()

    def call(self, message: list[Any]) -> Any:
        status, body = self._post(pack(message, size_max=PEER_MESSAGE_BYTES_MAX))
        if status == 200:
            try:
                return unpack(body, size_max=PEER_MESSAGE_BYTES_MAX)
            except InvalidArgument as error:
                raise Unavailable(f"peer {self.name} sent a malformed reply") from error
        try:
            refusal = error_from_wire(unpack(body, size_max=PEER_MESSAGE_BYTES_MAX))
        except InvalidArgument:
            refusal = Unavailable(f"peer {self.name} refused the call: HTTP {status}")
        raise refusal

    def _post(self, body: bytes) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self._token}", "Content-Length": str(len(body))}
        for attempt in range(2):  # a kept-alive connection the peer closed gets one retry
            connection = getattr(self._local, "connection", None)
            if connection is None:
                connection = http.client.HTTPConnection(
                    self._host, self._port, timeout=self._timeout_s
                )
                self._local.connection = connection
            try:
                connection.request("POST", SHARD_PREFIX, body=body, headers=headers)
                response = connection.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                self._local.connection = None
                if attempt == 1:
                    raise Unavailable(f"peer {self.name} unreachable: {error}") from error
        raise AssertionError("unreachable")


def http_shard_store(url: str, token: str, writer: str) -> PeerShardStore:
    """The shards in ``writer``'s namespace on the ``blocks blob serve`` at ``url``."""
    return PeerShardStore(HttpPeerChannel(url, token), writer)


def handle_shard_request(
    head: RequestHead, body: bytes, host: ShardHost, token: str | None
) -> Response:
    """Serve one ``/_shards`` request from ``host`` (runs in a worker thread)."""
    given = head.headers.get("authorization", "")
    if not token or not hmac.compare_digest(given, f"Bearer {token}"):
        return Response(404)
    if head.method != "POST" or head.raw_path != SHARD_PREFIX:
        return Response(404)
    try:
        reply = serve_message(host, unpack(body, size_max=PEER_MESSAGE_BYTES_MAX))
        return Response(200, {}, pack(reply, size_max=PEER_MESSAGE_BYTES_MAX))
    except BlocksError as error:
        wire = error_to_wire(error)
        return Response(_STATUS.get(wire["type"], 500), {}, pack(wire))
