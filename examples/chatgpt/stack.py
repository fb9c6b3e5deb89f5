"""The servers behind the ChatGPT design, started on 127.0.0.1 and wired to clients.

=====================  ============================================  ========================
role                   block                                         shape here
=====================  ============================================  ========================
model serving          ``blocks.inference`` ``InferenceServer``      1 engine, continuous
                       (OpenAI-compatible HTTP, SSE streaming)       batching, paged KV cache
conversation history   ``blocks.kv`` ``LocalCluster``                3 nodes over TCP, N=3
                                                                     R=2 W=2, version vectors
response cache         ``blocks.cache`` server (W-TinyLFU)           1 node
token budgets          ``blocks.ratelimit`` server (token bucket)    1 node, a bucket per user
usage metering         ``blocks.counters`` server                    1 node: counters, HLL
=====================  ============================================  ========================

With ``base_url`` the stack starts no engine: replies come from that OpenAI-compatible server
(``blocks inference serve``/``route``, vLLM, llama.cpp's server), and ``engine`` is None.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from blocks.cache.client import CacheClient
from blocks.cache.service import build_server as build_cache_server
from blocks.counters.client import CountersClient
from blocks.counters.service import build_server as build_counters_server
from blocks.kv.client import KVClient
from blocks.kv.local import LocalCluster
from blocks.ratelimit.bucket import TokenBucket
from blocks.ratelimit.client import RateLimitClient
from blocks.ratelimit.service import build_server as build_ratelimit_server
from examples.common import Services

__all__ = ["Stack", "start_stack"]


@dataclass(frozen=True, slots=True)
class Stack:
    model: str
    inference_host: str
    inference_port: int
    inference_path: str
    """The OpenAI base URL's path (``/v1``): requests go to ``<path>/chat/completions``."""
    api_key: str
    kv: KVClient
    cache: CacheClient
    ratelimit: RateLimitClient
    counters: CountersClient
    token_burst: int
    engine: Any
    """The ``LLMEngine`` (its ``metrics`` are printed at the end); None with ``base_url``."""

    @property
    def inference_url(self) -> str:
        return f"http://{self.inference_host}:{self.inference_port}{self.inference_path}"


async def _start_inference(
    services: Services, model: str, device: str | None, max_model_len: int
) -> tuple[int, Any]:
    from blocks.inference.async_engine import AsyncEngine
    from blocks.inference.engine import EngineConfig
    from blocks.inference.factory import load_engine
    from blocks.inference.server import InferenceServer

    config = EngineConfig(num_blocks=256, max_model_len=max_model_len)
    engine = await asyncio.to_thread(load_engine, model, device=device, config=config)
    server = InferenceServer(AsyncEngine(engine), model_name=model)
    port = await server.start()
    services.defer("inference", server.stop)
    return port, engine


async def start_stack(
    services: Services,
    *,
    model: str,
    tokens_per_s: float,
    token_burst: int,
    device: str | None = None,
    max_model_len: int = 2048,
    base_url: str | None = None,
    api_key: str = "",
) -> Stack:
    """Start every server; each user may spend ``token_burst`` tokens at once and
    ``tokens_per_s`` sustained. With ``base_url`` (``http://HOST:PORT/v1``) no engine starts."""
    host, path = "127.0.0.1", "/v1"
    engine: Any = None
    if base_url is None:
        port, engine = await _start_inference(services, model, device, max_model_len)
    else:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"--base-url must be http://HOST:PORT/v1, got {base_url!r}")
        host, port, path = parts.hostname, parts.port or 80, parts.path.rstrip("/")
    cluster = LocalCluster(nodes=3, replicas=3, read_quorum=2, write_quorum=2, transport="tcp")
    await cluster.start()
    services.defer("kv", cluster.stop)

    cache_server, _ = build_cache_server(capacity=10_000)
    cache = CacheClient(await services.start(cache_server, "cache"), timeout_s=2.0)
    services.defer("cache-client", cache.close)

    bucket = TokenBucket(rate_per_s=tokens_per_s, burst=token_burst)
    limiter_server, _ = build_ratelimit_server(bucket)
    ratelimit = RateLimitClient(await services.start(limiter_server, "ratelimit"))
    services.defer("ratelimit-client", ratelimit.close)

    counters_server, _ = build_counters_server("usage-0")
    counters = CountersClient(await services.start(counters_server, "counters"))
    services.defer("counters-client", counters.close)
    return Stack(
        model,
        host,
        port,
        path,
        api_key,
        cluster.client(),
        cache,
        ratelimit,
        counters,
        token_burst,
        engine,
    )
