"""``blocks demo`` part: a durable broker, batched produce, a consumer group, a restart."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable

from blocks.core.running import running
from blocks.pubsub.client import connect
from blocks.pubsub.service import build_server


async def demo(say: Callable[[str], None]) -> None:
    with tempfile.TemporaryDirectory(prefix="blocks-pubsub-demo-") as data_dir:
        async with running(build_server(data_dir)[0]) as server:
            say(f"pubsub broker on {server.address}, data in {data_dir}")
            async with await connect([server.address]) as client:
                await client.create_topic("clicks", partitions=3)
                started = time.monotonic()
                for partition in range(3):
                    batch: list[tuple[bytes | None, bytes]] = [
                        (None, f"click {partition}-{i}".encode()) for i in range(1000)
                    ]
                    await client.produce_batch("clicks", partition, batch)
                rate = 3000 / (time.monotonic() - started)
                say(f"produced 3000 records in 3 durable batches ({rate:,.0f} records/s)")
                p, o = await client.produce("clicks", b"user 42 clicked", key=b"user-42")
                say(f"keyed record went to partition {p} at offset {o}")
                a = client.consumer("clicks", "stats", member="a", wait_ms=50)
                b = client.consumer("clicks", "stats", member="b", wait_ms=50)
                await a.refresh()
                await b.refresh()
                await a.refresh()  # a learns that b joined: the partitions are split
                assert a.assignment is not None and b.assignment is not None
                say(
                    f"group 'stats': a reads {a.assignment.partitions}, "
                    f"b reads {b.assignment.partitions}"
                )
                count = 0
                async for _ in a:
                    count += 1
                    if count == 500:
                        break
                committed = await a.commit()
                say(f"a read 500 records and committed {committed}")
                await a.close()
                await b.close()
        server = build_server(data_dir)[0]
        async with running(server), await connect([server.address]) as client:
            ends = [await client.end_offsets("clicks", p) for p in range(3)]
            say(f"restarted: partitions hold {[n for _, n in ends]} records")
            resume = [await client.committed("stats", "clicks", p) for p in range(3)]
            say(f"group 'stats' resumes from committed offsets {resume}")
