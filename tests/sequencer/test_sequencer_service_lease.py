"""A sequencer server that loses its worker lease stops issuing IDs."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from blocks.core.clock import ManualClock, SystemClock
from blocks.core.errors import InvalidArgument, Unavailable
from blocks.sequencer.client import SequencerClient
from blocks.sequencer.lease import LockFileLeases
from blocks.sequencer.service import build_server


def test_server_stops_issuing_after_losing_its_lease(tmp_path: Path) -> None:
    async def main() -> None:
        server, service = build_server(str(tmp_path), lease_ttl_ms=300, fsync=False)
        await server.start()
        try:
            async with SequencerClient(server.address) as client:
                assert len(await client.next_ids(100)) == 100
                with pytest.raises(InvalidArgument):
                    await client.next_ids(0)
                # Someone whose clock is far ahead sees the lease as expired and takes it.
                thief_clock = ManualClock(wall_ms=SystemClock().now_ms() + 60_000)
                thief = LockFileLeases(
                    os.path.join(tmp_path, "leases"),
                    ttl_ms=300,
                    safety_margin_ms=60,
                    clock=thief_clock,
                    fsync=False,
                )
                assert thief.acquire("thief").worker_id == service.worker_id
                for _ in range(50):
                    await asyncio.sleep(0.05)
                    try:
                        await client.next_ids(1)
                    except Unavailable:
                        return
                raise AssertionError("server kept issuing IDs after losing its lease")
        finally:
            await server.stop(grace_s=1.0)

    asyncio.run(asyncio.wait_for(main(), 30))
