"""The blocks behind the ChatGPT design, built for one backend and wired to the front end.

The table is the ``cluster`` backend (the default); ``local`` runs the same blocks in this
process without sockets, ``engines`` puts them on Redis and the model behind an OpenAI URL
of its own process (``stack.placement`` says exactly where each one ended up; see
``examples/backends.py``).

=====================  ============================================  ========================
role                   block (``cluster``)                           shape here
=====================  ============================================  ========================
model serving          ``blocks.inference`` ``InferenceServer``      1 engine, continuous
                       (OpenAI-compatible HTTP, SSE streaming)       batching, paged KV cache
conversation history   ``blocks.kv`` ``LocalCluster``                3 nodes over TCP, N=3
                                                                     R=2 W=2, version vectors
response cache         ``blocks.cache`` server (W-TinyLFU)           1 node
token budgets          ``blocks.ratelimit`` server (token bucket)    1 node, a bucket per user
usage metering         ``blocks.counters`` server                    1 node: counters, HLL
=====================  ============================================  ========================

With ``base_url`` the stack starts no engine on any backend: replies come from that
OpenAI-compatible server (``blocks inference serve``/``route``, vLLM, llama.cpp's server),
and ``engine`` is None.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from blocks.core.errors import InvalidArgument
from examples.backends import Backend, Blocks, Placement
from examples.common import Services
from examples.ports import CacheStore, CountersStore, Limiter, VersionedStore

__all__ = ["Stack", "start_stack"]


@dataclass(frozen=True, slots=True)
class Stack:
    model: str
    inference_host: str
    inference_port: int
    inference_path: str
    """The OpenAI base URL's path (``/v1``): requests go to ``<path>/chat/completions``."""
    api_key: str
    kv: VersionedStore
    cache: CacheStore
    ratelimit: Limiter
    counters: CountersStore
    token_burst: int
    engine: Any
    """The ``LLMEngine`` (its ``metrics`` are printed at the end) when it runs in this
    process; None with ``base_url`` or on ``engines``."""
    placement: Placement

    @property
    def inference_url(self) -> str:
        return f"http://{self.inference_host}:{self.inference_port}{self.inference_path}"


def split_base_url(base_url: str) -> tuple[str, int, str]:
    """``http://HOST:PORT/v1`` as (host, port, path); anything else is ``InvalidArgument``."""
    parts = urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname:
        raise InvalidArgument(f"--base-url must be http://HOST:PORT/v1, got {base_url!r}")
    return parts.hostname, parts.port or 80, parts.path.rstrip("/")


async def start_stack(
    services: Services,
    directory: Path,
    *,
    model: str,
    tokens_per_s: float,
    token_burst: int,
    device: str | None = None,
    max_model_len: int = 2048,
    base_url: str | None = None,
    api_key: str = "",
    backend: Backend | str = Backend.CLUSTER,
) -> Stack:
    """Build every block on ``backend``; each user may spend ``token_burst`` tokens at once
    and ``tokens_per_s`` sustained. With ``base_url`` (``http://HOST:PORT/v1``) no engine
    starts."""
    if base_url is not None:
        split_base_url(base_url)  # a bad URL fails before anything starts
    blocks = Blocks(backend, services, directory)
    url, engine = await blocks.inference(
        model=model, device=device, max_model_len=max_model_len, base_url=base_url
    )
    host, port, path = split_base_url(url)
    kv = await blocks.kv("kv")
    cache = await blocks.cache("cache")
    ratelimit = await blocks.limiter("ratelimit", rate_per_s=tokens_per_s, burst=token_burst)
    counters = await blocks.counters("counters")
    (usage,) = counters.values()
    return Stack(
        model,
        host,
        port,
        path,
        api_key,
        kv,
        cache,
        ratelimit,
        usage,
        token_burst,
        engine,
        blocks.placement,
    )
