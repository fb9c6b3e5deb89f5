"""``--backend local|cluster|engines``: the one place that builds every block a design needs.

Theory of operation. A design asks a ``Blocks`` for each block it uses (``await
blocks.kv()``, ``await blocks.queue()``, ...) and gets something that fills the block's
protocol (``examples/ports.py``, ``blocks.queue.api.Queue``, ``blocks.pubsub.api.PubSub``):

* ``local``: each block's own in-process implementation, no sockets (kv is a 3-node
  ``LocalCluster`` on the in-memory network, so it still keeps siblings);
* ``cluster``: blocks' own servers on 127.0.0.1 ports, reached through their clients over
  TCP and gRPC, in this process's event loop (what the designs did before the switch, and
  still the default);
* ``engines``: the adapters on real engines that ``examples/engine_processes.py`` starts:
  NATS JetStream (pub-sub, queue), Redis (kv, cache, counters, rate limits, ids), an S3
  endpoint (moto's server) and an OpenAI-compatible URL (``blocks inference serve``, or
  ``--base-url``).

Every block built is recorded in a ``Placement`` (``examples/placement.py``): where it runs,
and, on ``engines``, each block that still runs on blocks' own implementation and why (today
only search: issue #20 names no engine for it). The sessions print it and put it in their
JSON, so a block is never silently left off the engines.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Literal

from blocks.blob.client import S3Client
from blocks.blob.s3.handler import S3Config
from blocks.blob.server import BlobServer
from blocks.blob.store import LocalBlobStore
from blocks.cache.client import CacheClient
from blocks.cache.cluster import ClusterClient, LocalNode
from blocks.cache.local import TinyLFUCache
from blocks.cache.service import build_server as build_cache_server
from blocks.core.errors import InvalidArgument
from blocks.counters.client import CountersClient
from blocks.counters.service import build_server as build_counters_server
from blocks.kv import LocalCluster
from blocks.pubsub.api import PubSub
from blocks.pubsub.client import connect as connect_pubsub
from blocks.pubsub.local import LocalBroker
from blocks.pubsub.service import build_server as build_pubsub_server
from blocks.queue.api import Queue
from blocks.queue.client import connect as connect_queue
from blocks.queue.local import LocalQueue
from blocks.queue.service import build_server as build_queue_server
from blocks.ratelimit.bucket import TokenBucket
from blocks.ratelimit.client import RateLimitClient
from blocks.ratelimit.service import build_server as build_ratelimit_server
from blocks.search.client import SearchClient
from blocks.search.exact import ExactIndex
from blocks.search.service import SearchNode
from blocks.search.service import build_server as build_search_server
from blocks.sequencer.client import SequencerClient
from blocks.sequencer.service import build_server as build_sequencer_server
from examples.common import BlockingCalls, Services
from examples.engine_processes import Engines
from examples.inprocess import (
    BlobObjects,
    LocalCountersStore,
    LocalIds,
    LocalLimiter,
    LocalObjects,
    LocalSearch,
)
from examples.placement import BACKENDS, Backend, Placement, add_backend_argument, parse_backend
from examples.ports import (
    CacheStore,
    CountersStore,
    IdSource,
    Limiter,
    ObjectStore,
    TextSearch,
    VersionedStore,
)

__all__ = [
    "BACKENDS",
    "Backend",
    "Blocks",
    "ObjectFactory",
    "Placement",
    "add_backend_argument",
    "parse_backend",
]

CACHE_CAPACITY = 10_000
KV_NODES = 3
NO_ENGINE = "no engine for this block in issue #20"


class ObjectFactory:
    """Opens ``ObjectStore`` handles: an S3 connection each (blocks' ``S3Client`` to
    ``endpoint``), or a handle on one ``shared`` blob store, thread-safe, owned by the stack."""

    def __init__(
        self,
        endpoint: str | None,
        access_key: str = "",
        secret_key: str = "",
        *,
        shared: BlobObjects | None = None,
    ) -> None:
        if (endpoint is None) == (shared is None):
            raise InvalidArgument("an ObjectFactory has an endpoint or a shared store")
        self.endpoint = endpoint
        self.shared = shared
        self._keys = (access_key, secret_key)

    def __call__(self) -> ObjectStore:
        if self.shared is not None:
            return LocalObjects(self.shared)
        assert self.endpoint is not None  # __init__ checked: one of the two
        return S3Client(self.endpoint, *self._keys)


class Blocks:
    """Builds blocks for one backend; everything it starts is stopped by ``services``."""

    def __init__(self, backend: Backend | str, services: Services, directory: Path) -> None:
        self.backend = parse_backend(backend)
        self.services = services
        self.directory = directory
        self.placement = Placement(self.backend)
        self.engines = Engines(services, directory / "engines")
        self.placement.engines = self.engines.started  # filled as engines start
        self.engine_calls = BlockingCalls(4, "engine-clients")
        services.defer("engine-client-threads", self.engine_calls.close)

    async def kv(self, block: str = "kv") -> VersionedStore:
        if self.backend is Backend.ENGINES:
            url = await self.engines.redis_url()  # says what to install if Redis is missing
            from blocks.kv.adapters.redis import RedisKeyValueStore
            from examples.engine_clients import RedisVersions

            store = await self.engine_calls.run(
                lambda: RedisKeyValueStore.open(url, namespace=f"{block}:")
            )
            versions = RedisVersions(store, self.engine_calls)
            self.services.defer(f"{block}-client", versions.close)
            self.placement.place(
                block, "Redis (RedisKeyValueStore adapter): compare-and-set, no siblings"
            )
            return versions
        transport: Literal["memory", "tcp"] = "tcp" if self.backend is Backend.CLUSTER else "memory"
        cluster = LocalCluster(
            nodes=KV_NODES, replicas=3, read_quorum=2, write_quorum=2, transport=transport
        )
        await cluster.start()
        self.services.defer(block, cluster.stop)
        shape = "over TCP" if transport == "tcp" else "on the in-memory network"
        self.placement.place(
            block, f"blocks.kv LocalCluster, {KV_NODES} nodes {shape}, N=3 R=2 W=2"
        )
        return cluster.client()

    async def cache(self, block: str = "cache", *, nodes: int = 1) -> CacheStore:
        if self.backend is Backend.ENGINES:
            url = await self.engines.redis_url()
            from blocks.cache.adapters.redis import RedisCache
            from examples.engine_clients import RedisMemo

            cache = await self.engine_calls.run(  # opening asks the server for its stats
                lambda: RedisCache.open(url, CACHE_CAPACITY, namespace=f"{block}:")
            )
            memo = RedisMemo(cache, self.engine_calls)
            self.services.defer(f"{block}-client", memo.close)
            self.placement.place(block, "Redis (RedisCache adapter): SET PX / GET / DEL")
            return memo  # one server holds every key: nothing to spread over nodes
        if self.backend is Backend.CLUSTER:
            clients: dict[str, CacheClient] = {}
            for index in range(nodes):
                server, _ = build_cache_server(capacity=CACHE_CAPACITY)
                address = await self.services.start(server, f"{block}-{index}")
                client = CacheClient(address, timeout_s=2.0)
                self.services.defer(f"{block}-client-{index}", client.close)
                clients[address] = client
            self.placement.place(block, f"blocks.cache servers x{nodes} (W-TinyLFU)")
            if nodes == 1:
                return next(iter(clients.values()))
            return ClusterClient(clients, down_for_s=5.0)
        local = {f"{block}-{i}": LocalNode(TinyLFUCache(CACHE_CAPACITY)) for i in range(nodes)}
        self.placement.place(block, f"blocks.cache TinyLFUCache x{nodes} in this process")
        return ClusterClient(local, down_for_s=5.0)

    async def counters(
        self, block: str = "counters", *, nodes: int = 1
    ) -> dict[str, CountersStore]:
        """Counters nodes by name (a design spreads names over them with a hash ring)."""
        if self.backend is Backend.ENGINES:
            url = await self.engines.redis_url()
            from blocks.counters.adapters.redis import RedisCounters
            from examples.engine_clients import RedisUsage

            counters = await self.engine_calls.run(
                lambda: RedisCounters.open(url, namespace=f"{block}:")
            )
            usage = RedisUsage(counters, self.engine_calls)
            self.services.defer(f"{block}-client", usage.close)
            self.placement.place(
                block, "Redis (RedisCounters adapter): INCRBY, PFADD/PFCOUNT, Count-Min + top-k"
            )
            return {"redis": usage}  # one server holds every name: nothing to spread
        out: dict[str, CountersStore] = {}
        for index in range(nodes):
            name = f"{block}-{index}"
            if self.backend is Backend.CLUSTER:
                server, _ = build_counters_server(name)
                client = CountersClient(await self.services.start(server, name))
                self.services.defer(f"{name}-client", client.close)
                out[name] = client
            else:
                out[name] = LocalCountersStore(name, seed=index)
        kind = "servers" if self.backend is Backend.CLUSTER else "nodes in this process"
        self.placement.place(block, f"blocks.counters {kind} x{nodes}")
        return out

    async def limiter(self, block: str, *, rate_per_s: float, burst: int) -> Limiter:
        if self.backend is Backend.ENGINES:
            url = await self.engines.redis_url()
            from blocks.ratelimit.adapters.redis import RedisTokenBucket
            from examples.engine_clients import RedisLimiter

            on_redis = await self.engine_calls.run(
                lambda: RedisTokenBucket.open(url, rate_per_s, burst, namespace=f"{block}:")
            )
            limiter = RedisLimiter(on_redis, self.engine_calls)
            self.services.defer(f"{block}-client", limiter.close)
            self.placement.place(block, "Redis (RedisTokenBucket adapter): Lua, server time")
            return limiter
        bucket = TokenBucket(rate_per_s=rate_per_s, burst=burst)
        if self.backend is Backend.CLUSTER:
            server, _ = build_ratelimit_server(bucket)
            client = RateLimitClient(await self.services.start(server, block))
            self.services.defer(f"{block}-client", client.close)
            self.placement.place(block, "blocks.ratelimit server (token bucket)")
            return client
        self.placement.place(block, "blocks.ratelimit TokenBucket in this process")
        return LocalLimiter(bucket)

    async def ids(self, block: str = "ids") -> IdSource:
        if self.backend is Backend.ENGINES:
            url = await self.engines.redis_url()
            from blocks.sequencer.adapters.redis import RedisSnowflake
            from examples.engine_clients import RedisIds

            calls = BlockingCalls(1, f"{block}-client")  # the generator wants one thread
            generator = await calls.run(lambda: RedisSnowflake.open(url, owner=block))
            ids = RedisIds(generator, calls)
            self.services.defer(f"{block}-client", ids.close)
            self.placement.place(
                block,
                f"Redis (RedisSnowflake adapter): Snowflake on worker id "
                f"{generator.worker_id} leased from Redis",
            )
            return ids
        if self.backend is Backend.CLUSTER:
            directory = self.directory / block
            directory.mkdir(parents=True, exist_ok=True)
            server, _ = build_sequencer_server(str(directory), fsync=False)
            client = SequencerClient(await self.services.start(server, block))
            self.services.defer(f"{block}-client", client.close)
            self.placement.place(block, "blocks.sequencer server (Snowflake, leased worker id)")
            return client
        self.placement.place(block, "blocks.sequencer Snowflake in this process (worker id 1)")
        return LocalIds()

    async def queue(self, block: str = "queue") -> Queue:
        if self.backend is Backend.ENGINES:
            url = await self.engines.nats_url()  # says what to install if NATS is missing
            from blocks.queue.adapters.nats import NatsQueue

            queue: Queue = await NatsQueue.open(url)
            self.placement.place(block, "NATS JetStream work queues (NatsQueue adapter)")
        elif self.backend is Backend.CLUSTER:
            server, _ = build_queue_server(self.directory / block, fsync="never")
            queue = await connect_queue([await self.services.start(server, block)])
            self.placement.place(block, "blocks.queue server (durable broker)")
        else:
            queue = LocalQueue(self.directory / block, fsync="never")
            self.placement.place(block, "blocks.queue LocalQueue in this process")
        self.services.defer(f"{block}-client", queue.close)
        return queue

    async def pubsub(self, block: str = "pubsub") -> PubSub:
        if self.backend is Backend.ENGINES:
            url = await self.engines.nats_url()  # says what to install if NATS is missing
            from blocks.pubsub.adapters.nats import NatsPubSub

            pubsub: PubSub = await NatsPubSub.open(url)
            self.placement.place(block, "NATS JetStream streams (NatsPubSub adapter)")
        elif self.backend is Backend.CLUSTER:
            server, _ = build_pubsub_server(self.directory / block, fsync="never")
            address = await self.services.start(server, block)
            pubsub = await connect_pubsub([address])
            self.placement.place(block, f"blocks.pubsub broker server at {address}")
        else:
            pubsub = LocalBroker(self.directory / block, fsync="never")
            self.placement.place(block, "blocks.pubsub LocalBroker in this process")
        self.services.defer(f"{block}-client", pubsub.close)
        return pubsub

    async def objects(
        self, block: str, bucket: str, access_key: str, secret_key: str
    ) -> ObjectFactory:
        """A factory of object-store handles with ``bucket`` created."""
        if self.backend is Backend.LOCAL:
            store = LocalBlobStore(
                self.directory / block, codec="rs:2+1", chunk_bytes=64 * 1024, fsync=False
            )
            store.create_bucket(bucket)
            self.services.defer(block, lambda: self.engine_calls.run(store.close))
            factory = ObjectFactory(None, shared=store)
            self.placement.place(block, "blocks.blob LocalBlobStore in this process (RS 2+1)")
            return factory
        if self.backend is Backend.ENGINES:
            return await self._s3_objects(block, bucket, access_key, secret_key)
        endpoint = await self._start_blob_server(block, access_key, secret_key)
        where = f"blocks.blob server, S3 API at {endpoint} (RS 2+1)"
        factory = ObjectFactory(endpoint, access_key, secret_key)
        client = factory()
        try:
            await self.engine_calls.run(lambda: client_create_bucket(client, bucket))
        finally:
            client.close()
        self.placement.place(block, where)
        return factory

    async def _s3_objects(
        self, block: str, bucket: str, access_key: str, secret_key: str
    ) -> ObjectFactory:
        endpoint = await self.engines.s3_endpoint()
        from blocks.blob.adapters.s3 import S3BlobStore

        store = S3BlobStore(endpoint, access_key=access_key, secret_key=secret_key)
        self.services.defer(f"{block}-client", lambda: self.engine_calls.run(store.close))
        await self.engine_calls.run(lambda: store.create_bucket(bucket))
        self.placement.place(
            block, f"S3 endpoint (moto) at {endpoint}, S3BlobStore adapter (boto3)"
        )
        return ObjectFactory(None, shared=store)

    async def _start_blob_server(self, block: str, access_key: str, secret_key: str) -> str:
        store = LocalBlobStore(
            self.directory / block, codec="rs:2+1", chunk_bytes=64 * 1024, fsync=False
        )
        server = BlobServer(store, config=S3Config(credentials={access_key: secret_key}))
        await server.start()

        async def stop() -> None:
            await server.stop(grace_s=0.5)
            store.close()

        self.services.defer(block, stop)
        return server.endpoint

    async def search(self, block: str = "search") -> TextSearch:
        # The node serves BM25 text search and typeahead; its vector index stays empty.
        node = SearchNode(ExactIndex(4, "l2"))
        if self.backend is Backend.CLUSTER:
            server, _ = build_search_server(node)
            client = SearchClient(await self.services.start(server, block), timeout_s=10)

            async def close() -> None:
                client.close()

            self.services.defer(f"{block}-client", close)
            self.placement.place(block, "blocks.search server (BM25 + typeahead)")
            return client
        self.placement.place(
            block,
            "blocks.search node in this process (BM25 + typeahead)",
            own_because=NO_ENGINE if self.backend is Backend.ENGINES else None,
        )
        return LocalSearch(node)

    async def inference(
        self, *, model: str, device: str | None, max_model_len: int, base_url: str | None
    ) -> tuple[str, Any]:
        """The OpenAI base URL (``http://HOST:PORT/v1``) replies come from, and the engine
        when it runs in this process (None otherwise).

        ``base_url`` wins on every backend. Else ``engines`` starts ``blocks inference serve``
        as a process of its own; ``local`` and ``cluster`` run the engine in this process,
        behind its OpenAI HTTP endpoint. On every backend the design streams *chat*
        completions (roles, the server's chat template) with its own SSE client
        (``examples/chatgpt/sse.py``): the ``OpenAIGenerator`` adapter is the ``TextGenerator``
        API, text prompts over ``/v1/completions``, which has no roles to carry a chat.
        """
        chat = "chat completions by the design's SSE client"
        if base_url is not None:
            self.placement.place("inference", f"OpenAI URL {base_url} (--base-url), {chat}")
            return base_url, None
        if self.backend is Backend.ENGINES:
            url = await self.engines.openai_url(model, device, max_model_len)
            self.placement.place(
                "inference", f"OpenAI URL {url} (blocks inference serve process), {chat}"
            )
            return url, None
        from blocks.inference.async_engine import AsyncEngine
        from blocks.inference.engine import EngineConfig
        from blocks.inference.factory import load_engine
        from blocks.inference.server import InferenceServer

        config = EngineConfig(num_blocks=256, max_model_len=max_model_len)
        engine = await asyncio.to_thread(load_engine, model, device=device, config=config)
        server = InferenceServer(AsyncEngine(engine), model_name=model)
        port = await server.start()
        self.services.defer("inference", server.stop)
        url = f"http://127.0.0.1:{port}/v1"
        self.placement.place("inference", f"blocks.inference engine in this process at {url}")
        return url, engine


def client_create_bucket(client: ObjectStore, bucket: str) -> None:
    assert isinstance(client, S3Client), "only S3 endpoints need their bucket made"
    client.create_bucket(bucket)
