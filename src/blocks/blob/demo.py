"""``blocks demo`` part: a three-node erasure-coded blob cluster behind the S3 API.

Starts two shard peers and a front node (Reed-Solomon 2+1, so every chunk has one shard on
each node) on 127.0.0.1, uploads through the signed S3 client, shows deduplication, rots a
shard on disk and watches the read repair it, stops a peer and reads through the loss.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from blocks.blob.client import S3Client
from blocks.blob.cluster.node import open_node
from blocks.blob.s3.handler import S3Config
from blocks.blob.server import BlobServer

__all__ = ["demo"]

_TOKEN = "demo-cluster-token"
_ACCESS, _SECRET = "DEMOKEY", "demo-secret"


async def _start_node(directory: Path, peers: list[str], codec: str) -> BlobServer:
    # Opening reads the journal and the local shard directory: off the event loop, which
    # serves the other nodes of this demo.
    store, local = await asyncio.to_thread(
        open_node,
        directory,
        peers=peers,
        cluster_token=_TOKEN,
        codec=codec,
        chunk_bytes=256 * 1024,
        fsync=False,
    )
    config = S3Config(credentials={_ACCESS: _SECRET}, cluster_token=_TOKEN)
    server = BlobServer(store, config=config, local_shards=local)
    await server.start()
    return server


async def demo(say: Callable[[str], None]) -> None:
    with tempfile.TemporaryDirectory(prefix="blob-demo-") as root:
        base = Path(root)
        peer_a = await _start_node(base / "peer-a", [], "rs:2+1")
        peer_b = await _start_node(base / "peer-b", [], "rs:2+1")
        front = await _start_node(base / "front", [peer_a.endpoint, peer_b.endpoint], "rs:2+1")
        servers = [front, peer_a, peer_b]
        say(f"front node {front.endpoint}, shard peers {peer_a.endpoint} {peer_b.endpoint}")
        client = S3Client(front.endpoint, _ACCESS, _SECRET)
        try:
            await _walkthrough(say, client, front, peer_a, base)
        finally:
            client.close()
            for server in servers:
                await server.stop(grace_s=1)
                server.store.close()


async def _walkthrough(
    say: Callable[[str], None], client: S3Client, front: BlobServer, peer: BlobServer, base: Path
) -> None:
    store = front.handler.store
    data = os.urandom(1024 * 1024)
    await asyncio.to_thread(client.create_bucket, "videos")
    etag = await asyncio.to_thread(client.put_object, "videos", "cat.mp4", data)
    ledger = front.store.ledger  # type: ignore[attr-defined]
    say(f"PUT videos/cat.mp4: 1 MiB -> {ledger.chunks_written} chunks x 3 shards, ETag {etag}")
    chunk_id = ledger.referenced()[0]
    placement = front.store.chunks.locate(chunk_id)  # type: ignore[attr-defined]
    say(
        f"chunk {chunk_id[:12]}: shard 0 on {placement[0]}, 1 on {placement[1]}, 2 on {placement[2]}"
    )
    await asyncio.to_thread(client.put_object, "videos", "cat-copy.mp4", data)
    say(
        f"PUT the same bytes as cat-copy.mp4: {ledger.chunks_deduplicated} chunks deduplicated, none written"
    )

    rotten = next((base / "peer-a" / "shards" / "peers").glob("*/??/??/*.*"))
    raw = bytearray(rotten.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    rotten.write_bytes(bytes(raw))
    say(f"flipped one byte in {rotten.name[:12]}... on peer-a (bit rot)")
    got = await asyncio.to_thread(client.get_object, "videos", "cat.mp4")
    say(
        f"GET still returns the right bytes: sha256 match {hashlib.sha256(got).digest() == hashlib.sha256(data).digest()}"
    )
    report = await asyncio.to_thread(store.scrub)
    say(
        f"scrub: {report.chunks_checked} chunks checked, {report.shards_repaired} shards rewritten (reads repaired the rest)"
    )

    await peer.stop(grace_s=1)
    say("stopped peer-a: one shard of every chunk is now unreachable")
    part = await asyncio.to_thread(client.get_object, "videos", "cat.mp4", "bytes=500000-500015")
    say(
        f"ranged GET bytes=500000-500015 decodes from the two left: match {part == data[500000:500016]}"
    )
    keys = await asyncio.to_thread(client.list_keys, "videos")
    say(f"ListObjectsV2: {[key for key, _ in keys]}")
