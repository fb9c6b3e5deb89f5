"""The server reads time only from its injected clock: a fixed clock gives a fixed ``created``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from blocks.core.clock import ManualClock, SystemClock
from blocks.inference.async_engine import AsyncEngine
from blocks.inference.engine import EngineConfig, LLMEngine
from blocks.inference.factory import tiny_random_model
from blocks.inference.server import InferenceServer
from blocks.inference.tokenizer import CharTokenizer

CONFIG = EngineConfig(
    num_blocks=32, block_size=8, max_num_seqs=4, max_num_batched_tokens=64, max_model_len=128
)
WALL_MS = 1_234_567_890_999  # created is whole seconds: 1234567890


async def _post(port: int, path: str, body: dict[str, Any]) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        data = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


async def _created_values() -> list[int]:
    engine = AsyncEngine(LLMEngine(tiny_random_model(seed=1), CharTokenizer(), CONFIG))
    server = InferenceServer(engine, model_name="tiny", clock=ManualClock(wall_ms=WALL_MS))
    port = await server.start()
    try:
        created = []
        for path, body in (
            ("/v1/completions", {"prompt": "abc", "max_tokens": 2}),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ):
            whole = await _post(port, path, {**body, "max_tokens": 2})
            created.append(json.loads(whole.split(b"\r\n\r\n", 1)[1])["created"])
            streamed = await _post(port, path, {**body, "max_tokens": 2, "stream": True})
            for line in streamed.split(b"\n"):
                if line.startswith(b"data: {"):
                    created.append(json.loads(line[6:])["created"])
        return created
    finally:
        await server.stop()


def test_a_fixed_clock_gives_a_fixed_created() -> None:
    created = asyncio.run(asyncio.wait_for(_created_values(), 60))
    assert len(created) >= 4 and set(created) == {WALL_MS // 1000}


def test_the_default_clock_is_the_wall_clock() -> None:
    engine = AsyncEngine(LLMEngine(tiny_random_model(seed=1), CharTokenizer(), CONFIG))
    server = InferenceServer(engine, model_name="tiny")
    assert isinstance(server.clock, SystemClock)
    assert server.engine.tokenizer is engine.engine.tokenizer
    assert server.engine.metrics is engine.engine.metrics
    assert server.engine.vocab_size == engine.engine.model.config.vocab_size
