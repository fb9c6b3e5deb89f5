"""Small PUTs committed on the event loop (``ObjectOps._put_runner``): when they are, when
they are not, and that an acknowledged one survives ``kill -9`` of ``blocks blob serve``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blocks.blob import LocalBlobStore
from blocks.blob.cluster.node import open_node
from blocks.blob.s3.handler import S3Config, S3Handler
from blocks.blob.s3.streaming import StreamedPayload

from .process_cluster import boto3_client
from .server_thread import running_server

pytest.importorskip("boto3")

ACCESS, SECRET = "AKIDINLINE", "inline-secret"


def _client(endpoint: str) -> Any:
    return boto3_client(endpoint, ACCESS, SECRET)


@pytest.fixture
def handler(tmp_path: Path) -> Iterator[S3Handler]:
    store = LocalBlobStore(tmp_path)
    handler = S3Handler(store, S3Config(credentials={ACCESS: SECRET}))
    handler.requests_in_flight = 1  # as inside ``handle``: this request alone
    try:
        yield handler
    finally:
        handler.workers.close()
        store.close()


def test_a_lone_small_put_runs_inline(handler: S3Handler) -> None:
    assert handler._put_runner(b"x" * 4096) == handler.workers.run_inline


def test_other_requests_connections_or_worker_calls_keep_the_pool(handler: S3Handler) -> None:
    handler.requests_in_flight = 2
    assert handler._put_runner(b"x") == handler.workers.run
    handler.requests_in_flight = 1
    handler.workers.requests_in_flight = 1
    assert handler._put_runner(b"x") == handler.workers.run
    handler.workers.requests_in_flight = 0
    handler.workers.uploads_in_flight = 1
    assert handler._put_runner(b"x") == handler.workers.run
    handler.workers.uploads_in_flight = 0
    handler.connections_open = 2  # another client may send a PUT to share the fsync with
    assert handler._put_runner(b"x") == handler.workers.run
    handler.connections_open = 1
    assert handler._put_runner(b"x") == handler.workers.run_inline


def test_bodies_past_the_inline_size_and_streams_keep_their_pools(handler: S3Handler) -> None:
    store = handler.store
    assert isinstance(store, LocalBlobStore)
    assert handler._put_runner(b"x" * (store.inline_bytes_max + 1)) == handler.workers.run
    streamed = StreamedPayload.__new__(StreamedPayload)  # only its type is looked at
    assert handler._put_runner(streamed) == handler.workers.run_upload


def test_a_store_near_compaction_keeps_the_pool(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "c", compact_bytes_min=1)
    handler = S3Handler(store, S3Config(credentials={ACCESS: SECRET}))
    handler.requests_in_flight = 1
    try:
        assert store.compaction_near(0)
        assert handler._put_runner(b"x") == handler.workers.run
    finally:
        handler.workers.close()
        store.close()


def test_boto3_small_puts_go_inline_and_read_back(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    config = S3Config(credentials={ACCESS: SECRET})
    with running_server(store, config=config) as server:
        client = _client(server.endpoint)
        client.create_bucket(Bucket="bkt")
        for n in range(5):
            client.put_object(Bucket="bkt", Key=f"k{n}", Body=bytes([n]) * 4096)
        assert server.handler.inline_writes == 5
        client.put_object(Bucket="bkt", Key="big", Body=b"b" * (store.inline_bytes_max + 1))
        assert server.handler.inline_writes == 5
        second = _client(server.endpoint)  # a second connection held open: the pool
        second.head_bucket(Bucket="bkt")
        client.put_object(Bucket="bkt", Key="k0", Body=bytes([0]) * 4096)
        assert server.handler.inline_writes == 5
        assert server.handler.connections_open == 2
        for n in range(5):
            body = client.get_object(Bucket="bkt", Key=f"k{n}")["Body"].read()
            assert body == bytes([n]) * 4096
    store.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.process
def test_acknowledged_inline_puts_survive_kill_9(tmp_path: Path) -> None:
    port = _free_port()
    command = [
        sys.executable, "-m", "blocks", "blob", "serve", "--data-dir", str(tmp_path),
        "--listen", f"127.0.0.1:{port}", "--access-key", ACCESS, "--secret-key", SECRET,
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # blocks until the server listens (or dies)
        assert "serving S3" in line, line
        client = _client(f"http://127.0.0.1:{port}")
        client.create_bucket(Bucket="bkt")
        for n in range(20):
            client.put_object(Bucket="bkt", Key=f"k{n}", Body=bytes([n]) * (4096 + n))
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
    store, _ = open_node(tmp_path)
    try:
        for n in range(20):
            assert store.get_object("bkt", f"k{n}")[1] == bytes([n]) * (4096 + n)
    finally:
        store.close()
