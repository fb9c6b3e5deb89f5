"""``blocks demo`` part: a limiter server refuses a burst honestly; two processes share a limit."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path

from blocks.ratelimit.bucket import TokenBucket
from blocks.ratelimit.client import RateLimitClient
from blocks.ratelimit.distributed import DistributedLimiter, FileWindowStore
from blocks.ratelimit.guard import limit
from blocks.ratelimit.service import build_server

__all__ = ["demo"]


async def demo(say: Callable[[str], None]) -> None:
    server, _ = build_server(TokenBucket(rate_per_s=20, burst=5))
    await server.start()
    try:
        async with RateLimitClient(server.address) as client:
            decisions = [await client.acquire("user:42") for _ in range(8)]
            marks = "".join("+" if d.allowed else "-" for d in decisions)
            say(f"token bucket 20/s, burst 5: eight requests at once -> {marks}")
            wait_ms = decisions[-1].retry_after_ms
            say(f"refused with retry_after_ms={wait_ms}; waiting exactly that long...")
            await asyncio.sleep(wait_ms / 1000)
            again = await client.acquire("user:42")
            say(f"...and the retry is {'admitted' if again.allowed else 'refused'}")
    finally:
        await server.stop(grace_s=1.0)
    bucket = TokenBucket(rate_per_s=50, burst=1)
    started = asyncio.get_running_loop().time()
    for _ in range(5):
        async with limit(bucket, "job", wait_ms_max=1000):
            pass
    elapsed_ms = (asyncio.get_running_loop().time() - started) * 1000
    say(f"`async with limit(...)` paced 5 jobs at 50/s in {elapsed_ms:.0f} ms")
    with tempfile.TemporaryDirectory() as directory:
        path = str(Path(directory) / "windows")
        first, second = (DistributedLimiter(FileWindowStore(path), 10, 60_000) for _ in range(2))
        admitted = [(first if k % 2 else second).acquire("api").allowed for k in range(16)]
        say(f"two limiters sharing a file store, limit 10/min: {sum(admitted)} of 16 admitted")
