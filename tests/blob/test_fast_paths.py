"""The fast paths keep every promise: views equal decoding, commits wait for flushes, group
racing commits agree with the journal, streamed PUTs commit nothing on a bad body, streamed GETs never
send wrong bytes."""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import socket
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import blocks.blob.storage.shards as shards
from blocks.blob import LocalBlobStore, MemoryShardStore, ReedSolomonCodec, ReplicationCodec
from blocks.blob.storage.chunks import ChunkStore
from blocks.blob.storage.durable import Flush
from blocks.blob.storage.pipeline import split_chunks

from .server_thread import running_server

MIB = 1024 * 1024


@given(
    st.binary(min_size=1, max_size=5000),
    st.sampled_from([(4, 2), (8, 3), (1, 1), (3, 2)]),
)
def test_data_views_equal_decoding(data: bytes, shape: tuple[int, int]) -> None:
    codec = ReedSolomonCodec(*shape)
    payloads = dict(enumerate(codec.encode(data)))
    views = codec.data_views(payloads, len(data))
    assert views is not None and b"".join(views) == data
    assert codec.decode(payloads, len(data)) == data
    assert codec.data_views(payloads, len(data) + 1) is None  # not this chunk's layout
    del payloads[0]
    assert codec.data_views(payloads, len(data)) is None  # a data shard missing: decode
    copies = ReplicationCodec(2)
    assert (
        b"".join(copies.data_views(dict(enumerate(copies.encode(data))), len(data)) or []) == data
    )


@given(st.lists(st.binary(max_size=300), max_size=8), st.integers(1, 128))
def test_split_chunks_cuts_exactly(pieces: list[bytes], chunk_bytes: int) -> None:
    joined = b"".join(pieces)
    expected = [joined[i : i + chunk_bytes] for i in range(0, len(joined), chunk_bytes)]
    assert list(split_chunks(iter(pieces), chunk_bytes)) == expected
    assert list(split_chunks(joined, chunk_bytes)) == expected


def test_healthy_and_degraded_reads_agree() -> None:
    nodes = {f"n{i}": MemoryShardStore(f"n{i}") for i in range(6)}
    store = ChunkStore(nodes, ReedSolomonCodec(4, 2))
    data = os.urandom(100_003)
    chunk_id = store.write(data)
    assert b"".join(store.read_views(chunk_id)) == data
    first = store.locate(chunk_id)[0]
    nodes[first].corrupt(chunk_id, 0)
    assert store.read(chunk_id) == data  # decoded from parity, checked, repaired
    assert b"".join(store.read_views(chunk_id)) == data


def test_commit_waits_for_the_shard_flush(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    held: list[Future[None]] = []
    real = shards.flush_descriptors

    def held_flush(descriptors: Any, directories: Any = ()) -> Flush:
        real(descriptors, directories).wait()
        future: Future[None] = Future()
        held.append(future)
        return Flush([future])

    monkeypatch.setattr(shards, "flush_descriptors", held_flush)
    store = LocalBlobStore(tmp_path, chunk_bytes=1000, inline_bytes_max=0)
    store.create_bucket("bkt")
    records_before = store.journal.bytes_total
    done = threading.Event()
    worker = threading.Thread(
        target=lambda: (store.put_object("bkt", "k", os.urandom(3500)), done.set())
    )
    worker.start()
    deadline = time.monotonic() + 10
    while len(held) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert len(held) == 4 and not done.is_set()
    assert store.journal.bytes_total == records_before  # no manifest record submitted yet
    for future in held:
        future.set_result(None)
    worker.join(10)
    assert done.is_set() and store.head_object("bkt", "k").size == 3500


def test_racing_puts_and_deletes_of_one_key_agree_with_the_disk(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, chunk_bytes=64, inline_bytes_max=100, fsync=False)
    store.create_bucket("bkt")
    rng = random.Random(7)
    real_submit = store.journal.submit

    def uneven_submit(record: bytes) -> Future[int]:  # durability in any order: overtaking
        written = real_submit(record)
        late: Future[int] = Future()
        delay = rng.random() * 0.003
        threading.Timer(delay, lambda: late.set_result(written.result())).start()
        return late

    store.journal.submit = uneven_submit  # type: ignore[method-assign]

    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        try:
            for round_ in range(30):
                if (seed + round_) % 7 == 0:
                    store.delete_object("bkt", "k")
                else:
                    store.put_object(
                        "bkt", "k", bytes([seed, round_]) * (seed + 40) * (1 + round_ % 2)
                    )
        except BaseException as error:  # reported below: a thread's error is no failure
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    in_memory = store.get_object("bkt", "k")[1] if store.list_objects("bkt").objects else None
    store.close()
    reopened = LocalBlobStore(
        tmp_path, chunk_bytes=64, inline_bytes_max=100, fsync=False, orphan_grace_s=0
    )
    on_disk = reopened.get_object("bkt", "k")[1] if reopened.list_objects("bkt").objects else None
    assert in_memory == on_disk
    assert reopened.chunks.stored_chunk_ids() == set(reopened.ledger.referenced())


def _raw_put(endpoint: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    host, port = endpoint.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("PUT", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_streamed_put_with_a_bad_body_commits_nothing(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, chunk_bytes=MIB, fsync=False)
    store.create_bucket("bkt")
    store.put_object("bkt", "old", b"keep me")
    body = os.urandom(3 * MIB + 5)
    with running_server(store) as server:
        good = {"x-amz-content-sha256": hashlib.sha256(body).hexdigest()}
        assert _raw_put(server.endpoint, "/bkt/new", body, good)[0] == 200
        assert store.get_object("bkt", "new")[1] == body
        bad = {"x-amz-content-sha256": hashlib.sha256(b"other").hexdigest()}
        status, reply = _raw_put(server.endpoint, "/bkt/new", body[::-1], bad)
        assert status == 400 and b"XAmzContentSHA256Mismatch" in reply
        crc = {"x-amz-checksum-crc32": "AAAAAA=="}
        status, reply = _raw_put(server.endpoint, "/bkt/other", body, crc)
        assert status == 400 and b"BadDigest" in reply
    assert store.get_object("bkt", "new")[1] == body  # the failed overwrite changed nothing
    assert [o.key for o in store.list_objects("bkt").objects] == ["new", "old"]
    assert store.ledger.wait_for_deletes()
    assert store.chunks.stored_chunk_ids() == set(store.ledger.referenced())


def test_client_vanishing_mid_body_leaves_nothing(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, chunk_bytes=MIB, fsync=False)
    store.create_bucket("bkt")
    with running_server(store) as server:
        host, port = server.endpoint.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"PUT /bkt/half HTTP/1.1\r\nHost: x\r\nContent-Length: 4194304\r\n\r\n")
            sock.sendall(os.urandom(2 * MIB + 3))
        deadline = time.monotonic() + 10
        while store.ledger.referenced() and time.monotonic() < deadline:
            time.sleep(0.02)
    assert store.list_objects("bkt").objects == ()
    assert store.ledger.referenced() == [] and store.ledger.wait_for_deletes()
    assert store.chunks.stored_chunk_ids() == set()


def test_a_chunk_lost_mid_stream_cuts_the_response_short(tmp_path: Path) -> None:
    nodes = {f"n{i}": MemoryShardStore(f"n{i}") for i in range(6)}
    store = LocalBlobStore(nodes=nodes, chunk_bytes=MIB)
    store.create_bucket("bkt")
    data = os.urandom(3 * MIB)
    store.put_object("bkt", "k", data)
    second = store.index.objects["bkt"]["k"].chunks[1].chunk_id
    for index, node in enumerate(store.chunks.locate(second)[:3]):
        nodes[node].drop(second, index)  # more than m: the chunk is gone
    with running_server(store) as server:
        host, port = server.endpoint.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request("GET", "/bkt/k")
        response = connection.getresponse()
        assert response.status == 200
        with pytest.raises(http.client.IncompleteRead) as caught:
            response.read()
        assert data.startswith(caught.value.partial) and len(caught.value.partial) < len(data)
        connection.close()
