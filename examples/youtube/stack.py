"""The servers behind the YouTube design, started on 127.0.0.1 and wired to clients.

Theory of operation. ``start_stack`` starts one server (or small cluster) per role and
returns a ``Stack`` of connected clients; every server is registered with the caller's
``Services`` so it stops when they close, even if a later one fails to start.

=================  =============================================  ==========================
role               block                                          shape here
=================  =============================================  ==========================
video bytes        ``blocks.blob`` behind its S3 HTTP API         1 node, Reed-Solomon 2+1
transcoding jobs   ``blocks.queue`` server                        1 durable broker
video metadata     ``blocks.kv`` ``LocalCluster``                 3 nodes over TCP, N=3 R=2 W=2
metadata cache     ``blocks.cache`` servers + ``ClusterClient``   2 nodes, ketama placement
views and trends   ``blocks.counters`` servers                    2 nodes, names sharded
title search       ``blocks.search`` server (BM25 + typeahead)    1 node
video ids          ``blocks.sequencer`` server (Snowflake)        1 node, leased worker id
=================  =============================================  ==========================
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from blocks.blob.client import S3Client
from blocks.blob.s3api import S3Config
from blocks.blob.server import BlobServer
from blocks.blob.store import LocalBlobStore
from blocks.cache.client import CacheClient
from blocks.cache.cluster import ClusterClient
from blocks.cache.service import build_server as build_cache_server
from blocks.counters.client import CountersClient
from blocks.counters.service import build_server as build_counters_server
from blocks.kv.client import KVClient
from blocks.kv.local import LocalCluster
from blocks.queue.client import QueueClient
from blocks.queue.client import connect as connect_queue
from blocks.queue.service import build_server as build_queue_server
from blocks.search.client import SearchClient
from blocks.search.exact import ExactIndex
from blocks.search.service import SearchNode
from blocks.search.service import build_server as build_search_server
from blocks.sequencer.client import SequencerClient
from blocks.sequencer.service import build_server as build_sequencer_server
from examples.common import BlockingCalls, Services

__all__ = ["ACCESS_KEY", "BUCKET", "SECRET_KEY", "Stack", "start_stack"]

ACCESS_KEY, SECRET_KEY = "youtube-upload", "youtube-secret"
BUCKET = "videos"
CACHE_NODES = 2
COUNTER_NODES = 2
BLOCKING_THREADS = 4


@dataclass(frozen=True, slots=True)
class Stack:
    """Connected clients of every server in the design (owned by the ``Services``)."""

    blob_endpoint: str
    queue: QueueClient
    kv: KVClient
    cache: ClusterClient
    counters: dict[str, CountersClient]
    search: SearchClient
    sequencer: SequencerClient
    blocking: BlockingCalls

    def s3(self) -> S3Client:
        """A new S3 connection (one per thread: an ``S3Client`` is one HTTP connection)."""
        return S3Client(self.blob_endpoint, ACCESS_KEY, SECRET_KEY)


async def _start_blob(services: Services, directory: Path) -> str:
    store = LocalBlobStore(directory, codec="rs:2+1", chunk_bytes=64 * 1024, fsync=False)
    server = BlobServer(store, config=S3Config(credentials={ACCESS_KEY: SECRET_KEY}))
    await server.start()

    async def stop() -> None:
        await server.stop(grace_s=0.5)
        store.close()

    services.defer("blob", stop)
    client = S3Client(server.endpoint, ACCESS_KEY, SECRET_KEY)
    try:
        await asyncio.to_thread(client.create_bucket, BUCKET)
    finally:
        client.close()
    return server.endpoint


async def _start_kv(services: Services) -> KVClient:
    cluster = LocalCluster(nodes=3, replicas=3, read_quorum=2, write_quorum=2, transport="tcp")
    await cluster.start()
    services.defer("kv", cluster.stop)
    return cluster.client()


async def _start_cache(services: Services) -> ClusterClient:
    nodes: dict[str, CacheClient] = {}
    for index in range(CACHE_NODES):
        server, _ = build_cache_server(capacity=10_000)
        address = await services.start(server, f"cache-{index}")
        client = CacheClient(address, timeout_s=2.0)
        services.defer(f"cache-client-{index}", client.close)
        nodes[address] = client
    return ClusterClient(nodes, down_for_s=5.0)


async def _start_counters(services: Services) -> dict[str, CountersClient]:
    clients: dict[str, CountersClient] = {}
    for index in range(COUNTER_NODES):
        server, _ = build_counters_server(f"counters-{index}")
        address = await services.start(server, f"counters-{index}")
        client = CountersClient(address)
        services.defer(f"counters-client-{index}", client.close)
        clients[f"counters-{index}"] = client
    return clients


async def start_stack(services: Services, directory: Path) -> Stack:
    """Start every server of the design with its data under ``directory``."""
    blocking = BlockingCalls(BLOCKING_THREADS, "youtube-clients")
    services.defer("client-threads", blocking.close)
    blob_endpoint = await _start_blob(services, directory / "blob")
    queue_server, _ = build_queue_server(directory / "queue", fsync="never")
    queue = await connect_queue([await services.start(queue_server, "queue")])
    services.defer("queue-client", queue.close)
    kv = await _start_kv(services)
    cache = await _start_cache(services)
    counters = await _start_counters(services)
    # The node serves BM25 text search and typeahead; its vector index stays empty.
    search_server, _ = build_search_server(SearchNode(ExactIndex(4, "l2")))
    search = SearchClient(await services.start(search_server, "search"), timeout_s=10)

    async def close_search() -> None:
        search.close()

    services.defer("search-client", close_search)
    sequencer_dir = directory / "sequencer"
    sequencer_dir.mkdir(parents=True, exist_ok=True)
    sequencer_server, _ = build_sequencer_server(str(sequencer_dir), fsync=False)
    sequencer = SequencerClient(await services.start(sequencer_server, "sequencer"))
    services.defer("sequencer-client", sequencer.close)
    return Stack(blob_endpoint, queue, kv, cache, counters, search, sequencer, blocking)
