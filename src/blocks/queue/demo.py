"""``blocks demo`` part: a durable queue server, long polling, a poison message, a restart."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable

from blocks.core.running import running
from blocks.queue.client import connect
from blocks.queue.service import build_server


async def demo(say: Callable[[str], None]) -> None:
    with tempfile.TemporaryDirectory(prefix="blocks-queue-demo-") as data_dir:
        async with running(build_server(data_dir)[0]) as server:
            say(f"queue server on {server.address}, data in {data_dir}")
            async with await connect([server.address]) as q:
                await q.create_queue("dead")
                await q.create_queue("jobs", visibility_ms=200, max_receives=2, dead_letter="dead")
                started = time.monotonic()
                waiting = asyncio.ensure_future(q.receive("jobs", wait_ms=5_000))
                await asyncio.sleep(0.1)
                await q.send("jobs", b"resize photo 1")
                [job] = await waiting
                waited_ms = (time.monotonic() - started) * 1000
                say(f"long poll woke after {waited_ms:.0f} ms with {job.body!r}; acking it")
                await q.ack("jobs", job.receipt)
                ids = [await q.send("jobs", f"job {i}".encode(), priority=i % 3) for i in range(5)]
                say(f"sent 5 more durably, ids {ids[0]}..{ids[-1]}; one of them is poison")
                await q.send("jobs", b"poison", priority=9)
                for attempt in (1, 2):
                    [bad] = await q.receive("jobs")
                    say(f"  attempt {attempt}: {bad.body!r} fails, not acked (visibility 200 ms)")
                    await asyncio.sleep(0.25)
                [dead] = await q.receive("dead", wait_ms=1_000)
                say(f"after 2 receives it is in the dead-letter queue: {dead.body!r}")
        server = build_server(data_dir)[0]
        async with running(server), await connect([server.address]) as q:
            batch = await q.receive("jobs", max_messages=10)
            say(
                f"restarted: {len(batch)} un-acked jobs came back, highest priority first: "
                + ", ".join(m.body.decode() for m in batch)
            )
