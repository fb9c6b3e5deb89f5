"""Bounds a client can reach, over real sockets and with SigV4-signed heads (an
authenticated client): declared body sizes, stalled and slow bodies, uploads in flight. Each breach is an explicit S3 error and a counter, and stalled
uploads never make other requests wait."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from blocks.blob import LocalBlobStore
from blocks.blob.client import S3Client
from blocks.blob.s3.handler import S3Config
from blocks.blob.s3.sigv4 import sign_request
from blocks.blob.server import BlobServer

from .server_thread import running_server

MIB = 1024 * 1024
DEADLINE_S = 60.0
ACCESS, SECRET = "AKIDBOUNDS", "bounds-secret"
KEYS = {ACCESS: SECRET}


def _connect(server: BlobServer) -> socket.socket:
    host, port = server.endpoint.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=DEADLINE_S)


def _send_head(server: BlobServer, path: str, length: int, extra: str = "") -> socket.socket:
    """A PUT head signed with SigV4 (an authenticated client), its body not sent."""
    sock = _connect(server)
    headers = {
        "host": server.endpoint.removeprefix("http://"),
        "x-amz-date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
        "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
        "content-length": str(length),
    }
    headers["authorization"] = sign_request(
        "PUT", path, "", headers, ACCESS, SECRET, headers["x-amz-date"]
    )
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    sock.sendall(f"PUT {path} HTTP/1.1\r\n{lines}{extra}\r\n".encode())
    return sock


def _reply(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection or a whole reply is in."""
    data = b""
    while b"</Error>" not in data:
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    return data


def _has_reply(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False
    finally:
        sock.setblocking(True)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalBlobStore]:
    store = LocalBlobStore(tmp_path, chunk_bytes=MIB, fsync=False)
    store.create_bucket("bkt")
    store.put_object("bkt", "there", b"already here")
    yield store
    store.close()


def test_a_declared_body_over_the_object_limit_is_refused_before_reading(
    store: LocalBlobStore,
) -> None:
    config = S3Config(credentials=KEYS, object_bytes_max=64 * MIB)
    with running_server(store, config=config) as server:
        sockets = [_send_head(server, f"/bkt/huge{n}", 100 * 1024**3) for n in range(8)]
        for sock in sockets:
            reply = _reply(sock)
            assert reply.startswith(b"HTTP/1.1 400") and b"<Code>EntityTooLarge</Code>" in reply
            sock.close()
        assert server.handler.bodies_too_large == 8
        # With Expect: 100-continue the refusal comes instead of the 100.
        sock = _send_head(server, "/bkt/huge", 65 * MIB, "Expect: 100-continue\r\n")
        reply = _reply(sock)
        assert reply.startswith(b"HTTP/1.1 400") and b"EntityTooLarge" in reply
        sock.close()
    assert [o.key for o in store.list_objects("bkt").objects] == ["there"]


def test_stalled_uploads_do_not_hold_up_other_requests(store: LocalBlobStore) -> None:
    # Many more stalled uploads than the default thread pool has workers, with a read
    # timeout far away: other requests must be answered while every one is still stalled.
    config = S3Config(credentials=KEYS, body_read_timeout_s=600.0, uploads_max=64)
    with running_server(store, config=config) as server:
        stalled = [_send_head(server, f"/bkt/stall{n}", 4 * MIB) for n in range(12)]
        deadline = time.monotonic() + DEADLINE_S
        while server.handler.workers.uploads_in_flight < 12 and time.monotonic() < deadline:
            time.sleep(0.01)  # polling until every stalled upload holds its place
        assert server.handler.workers.uploads_in_flight == 12
        client = S3Client(server.endpoint, ACCESS, SECRET, timeout_s=DEADLINE_S)
        assert [key for key, _ in client.list_keys("bkt")] == ["there"]
        assert client.get_object("bkt", "there") == b"already here"
        client.put_object("bkt", "small", b"s" * 1000)
        client.put_object("bkt", "large", b"L" * (2 * MIB))  # an upload of its own
        assert client.get_object("bkt", "large") == b"L" * (2 * MIB)
        client.close()
        assert not any(_has_reply(sock) for sock in stalled)  # still stalled, all of them
        for sock in stalled:
            sock.close()


def test_an_idle_or_slow_body_is_cut_with_request_timeout(store: LocalBlobStore) -> None:
    config = S3Config(credentials=KEYS, body_read_timeout_s=0.5)
    with running_server(store, config=config) as server:
        streamed = _send_head(server, "/bkt/idle-large", 4 * MIB)  # streamed into the store
        streamed.sendall(b"x" * 1000)
        small = _send_head(server, "/bkt/idle-small", 1000)  # read whole
        small.sendall(b"x" * 10)
        for sock in (streamed, small):
            reply = _reply(sock)
            assert reply.startswith(b"HTTP/1.1 400") and b"<Code>RequestTimeout</Code>" in reply
            sock.close()
        assert server.body_timeouts == 2
        assert server.handler.workers.uploads_in_flight == 0
    assert [o.key for o in store.list_objects("bkt").objects] == ["there"]
    assert store.ledger.wait_for_deletes()
    assert store.chunks.stored_chunk_ids() == set(store.ledger.referenced())


def test_uploads_past_the_limit_get_slow_down(store: LocalBlobStore) -> None:
    config = S3Config(credentials=KEYS, body_read_timeout_s=600.0, uploads_max=2)
    with running_server(store, config=config) as server:
        held = [_send_head(server, f"/bkt/held{n}", 4 * MIB) for n in range(2)]
        deadline = time.monotonic() + DEADLINE_S
        while server.handler.workers.uploads_in_flight < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # polling until both uploads hold their places
        refused = _send_head(server, "/bkt/third", 4 * MIB)
        reply = _reply(refused)
        assert reply.startswith(b"HTTP/1.1 503") and b"<Code>SlowDown</Code>" in reply
        assert server.handler.workers.uploads_refused == 1
        for sock in [*held, refused]:
            sock.close()


def test_connections_past_the_cap_get_an_error_reply(store: LocalBlobStore) -> None:
    with running_server(store, connections_max=2) as server:
        held = [_connect(server) for _ in range(2)]
        deadline = time.monotonic() + DEADLINE_S
        while server.connections_open < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # polling until the server has taken both
        refused = _connect(server)
        reply = _reply(refused)
        assert reply.startswith(b"HTTP/1.1 503") and b"<Code>SlowDown</Code>" in reply
        assert server.refused_connections == 1
        for sock in [*held, refused]:
            sock.close()


def test_idle_connections_and_stalled_heads_are_dropped(store: LocalBlobStore) -> None:
    """A connection that sends nothing, or half a request head, is closed once it has waited
    ``idle_timeout_s`` (the sweeper's doing: no timer per request); one that keeps sending
    requests is not."""

    def get(sock: socket.socket) -> bytes:
        sock.sendall(b"GET /bkt/there HTTP/1.1\r\nhost: x\r\n\r\n")
        data = b""
        while not data.endswith(b"already here"):
            piece = sock.recv(65536)
            assert piece, f"closed after {data!r}"
            data += piece
        return data

    with running_server(store, idle_timeout_s=0.4) as server:
        silent = _connect(server)
        halfway = _connect(server)
        halfway.sendall(b"GET /bkt/there HTTP/1.1\r\nhost: x\r\n")  # no blank line yet
        busy = _connect(server)
        for _ in range(6):  # 1.2 s of requests 0.2 s apart: three idle timeouts' worth
            assert get(busy).startswith(b"HTTP/1.1 200")
            time.sleep(0.2)
        assert silent.recv(1) == b""  # closed by the server
        assert halfway.recv(1) == b""
        assert server.idle_closed == 2
        assert get(busy).startswith(b"HTTP/1.1 200")
        for sock in (silent, halfway, busy):
            sock.close()
