"""``blocks demo`` part: two sequencer nodes lease distinct workers and hand out IDs."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

from blocks.core.clock import ManualClock
from blocks.sequencer.client import SequencerClient
from blocks.sequencer.hlc import HybridLogicalClock
from blocks.sequencer.lease_sources import LeaseFrom
from blocks.sequencer.service import build_server
from blocks.sequencer.timeids import UlidGenerator, Uuid7Generator

__all__ = ["demo"]


async def demo(say: Callable[[str], None]) -> None:
    with tempfile.TemporaryDirectory() as root:
        shared = LeaseFrom(directory=os.path.join(root, "leases"))
        servers = [
            build_server(
                os.path.join(root, f"node{k}"), lease_ttl_ms=3000, lease_from=shared, fsync=False
            )[0]
            for k in range(2)
        ]
        try:
            for server in servers:
                await server.start()
            all_ids: list[int] = []
            for server in servers:
                async with SequencerClient(server.address) as client:
                    ids = await client.next_ids(10_000)
                    fields = await client.decode(ids[-1])
                    say(
                        f"node {server.address}: 10,000 IDs from worker {fields.worker_id}, "
                        f"last {ids[-1]} = (ms {fields.unix_ms}, seq {fields.sequence})"
                    )
                    all_ids.extend(ids)
            say(f"{len(all_ids):,} IDs from two nodes, {len(set(all_ids)):,} distinct")
            async with SequencerClient(servers[0].address) as client:
                block = await client.allocate_tickets(1000)
            say(f"ticket block [{block.start}, {block.stop}) persisted before it was handed out")
        finally:
            for server in servers:
                await server.stop(grace_s=1.0)
    say(f"uuid7 {Uuid7Generator().next_id()}  ulid {UlidGenerator().next_id()}")
    clock_a, clock_b = ManualClock(wall_ms=1_000_000), ManualClock(wall_ms=999_900)
    node_a, node_b = HybridLogicalClock(clock=clock_a), HybridLogicalClock(clock=clock_b)
    sent = node_a.now()
    received = node_b.update(sent)
    say(f"HLC: sent at {sent}, received on a clock 100 ms behind at {received} (still after)")
