"""Measure prefix affinity: prefix-cache hit rate and TTFT with affinity on vs off, one run.

``python -m blocks.inference.router_bench [--model tiny-random] [--requests 160]``

Two routers run side by side in this process, one with affinity and one without, each over
its own ``--replicas`` engine processes (so neither arm warms the other's caches). The
workload is ``--systems`` shared system prompts, each followed by a short distinct question;
request ``i`` of the script goes to both arms, alternating which goes first, from
``--concurrency`` streaming clients per arm, so both arms see the same load at the same time.
Reported per arm: the replicas' prefix-cache hit rate (their ``/metrics`` gauge, weighted by
prompt tokens), TTFT p50/p99 (first content event, measured here), and where requests went.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import time
from typing import Any

from blocks.inference.router import Router
from blocks.inference.router_policy import RouterConfig
from blocks.inference.router_replicas import ReplicaSet
from blocks.inference.router_upstream import Upstream

__all__ = ["main"]

TIMEOUT_S = 300.0


def _workload(num_systems: int, num_requests: int, seed: int) -> list[list[dict[str, str]]]:
    rng = random.Random(seed)
    systems = [
        f"System prompt {i}. You are assistant {i} of a support desk for product line {i}. "
        + " ".join(f"Rule {i}.{j}: answer tersely, cite the manual section {j}." for j in range(6))
        for i in range(num_systems)
    ]
    return [
        [
            {"role": "system", "content": rng.choice(systems)},
            {"role": "user", "content": f"Question {n}: what is item {rng.randrange(1000)}?"},
        ]
        for n in range(num_requests)
    ]


async def _ttft(
    client: Upstream, model: str, messages: list[dict[str, str]], max_tokens: int
) -> float:
    body = json.dumps(
        {
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "stream": True,
            "temperature": 0,
        }
    ).encode()
    started = time.perf_counter()
    response = await client.send(
        "POST", "/v1/chat/completions", {"content-type": "application/json"}, body, TIMEOUT_S
    )
    first = None
    async with contextlib.aclosing(response.body_chunks(TIMEOUT_S)) as chunks:
        async for data in chunks:
            if first is None and b"data:" in data:
                first = time.perf_counter() - started
    if response.status != 200 or first is None:
        raise RuntimeError(f"request failed with status {response.status}")
    return first


async def _hit_rate(urls: list[str]) -> float:
    hits = total = 0.0
    for url in urls:
        client = Upstream(url)
        response = await client.send("GET", "/metrics", {}, b"", TIMEOUT_S)
        text = b""
        async for data in response.body_chunks(TIMEOUT_S):
            text += data
        await client.close()
        values = {}
        for line in text.decode().splitlines():
            name, _, value = line.partition(" ")
            values[name] = float(value) if value and not line.startswith("#") else 0.0
        prompt = values.get("blocks_inference_prompt_tokens_total", 0.0)
        hits += values.get("blocks_inference_prefix_cache_hit_rate", 0.0) * prompt
        total += prompt
    return hits / total if total else 0.0


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    serve_args = ["--model", args.model, "--num-blocks", str(args.num_blocks),
                  "--max-model-len", str(args.max_model_len), "--threads", "1"]  # fmt: skip
    sets = {arm: ReplicaSet(args.replicas, serve_args) for arm in ("on", "off")}
    routers: dict[str, Router] = {}
    try:
        urls = {arm: await s.start() for arm, s in sets.items()}
        for arm in sets:
            config = RouterConfig(affinity=arm == "on", prefix_chars=args.prefix_chars)
            routers[arm] = Router(urls[arm], config=config)
            await routers[arm].start()
        script = _workload(args.systems, args.requests, args.seed)
        ttfts: dict[str, list[float]] = {"on": [], "off": []}
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(len(script)):
            queue.put_nowait(n)

        async def worker() -> None:
            clients = {arm: Upstream(f"http://127.0.0.1:{r.port}") for arm, r in routers.items()}
            while not queue.empty():
                n = queue.get_nowait()
                order = ("on", "off") if n % 2 == 0 else ("off", "on")
                for arm in order:
                    ttfts[arm].append(
                        await _ttft(clients[arm], args.model, script[n], args.max_tokens)
                    )
            for client in clients.values():
                await client.close()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - started
        result: dict[str, Any] = {"seconds": round(elapsed, 1)}
        for arm in ("on", "off"):
            stats = routers[arm].stats()
            result[f"affinity_{arm}"] = {
                "prefix_cache_hit_rate": round(await _hit_rate(urls[arm]), 3),
                "ttft_p50_ms": round(1000 * statistics.median(ttfts[arm]), 1),
                "ttft_p99_ms": round(1000 * _pct(ttfts[arm], 0.99), 1),
                "ttft_mean_ms": round(1000 * statistics.fmean(ttfts[arm]), 1),
                "requests_per_replica": [r["requests"] for r in stats["replicas"].values()],
                "reasons": stats["reasons"],
            }
        return result
    finally:
        for router in routers.values():
            await router.stop()
        for replica_set in sets.values():
            await replica_set.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m blocks.inference.router_bench")
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--replicas", type=int, default=2, help="per arm")
    parser.add_argument("--requests", type=int, default=160)
    parser.add_argument("--systems", type=int, default=8, help="shared system prompts")
    parser.add_argument("--concurrency", type=int, default=4, help="streaming clients")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--num-blocks", type=int, default=128, help="KV blocks per replica")
    parser.add_argument("--max-model-len", type=int, default=512)
    parser.add_argument("--prefix-chars", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(_run(args)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
