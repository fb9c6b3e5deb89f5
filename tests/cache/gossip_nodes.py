"""Cache nodes that gossip with each other, started in process for the data-path tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from blocks.cache.service import CacheService, build_server
from blocks.testing.ports import free_ports


@asynccontextmanager
async def gossiping_nodes(
    count: int, *, capacity: int, token: str, dead_after_ms: int | None = None
) -> AsyncIterator[tuple[list[str], list[CacheService]]]:
    """``count`` nodes ``n0``.. on free ports, each given the others as peers; yields their
    addresses and services once every node's view holds all of them, and stops them after
    (built with no leave drain: these tests watch no node leave).

    ``dead_after_ms`` replaces the failure detector's silence bound: the nodes share the test's
    one event loop, so a test that floods that loop on purpose can keep a stalled heartbeat
    from being taken for a dead node."""
    ports = free_ports(count)
    addresses = [f"127.0.0.1:{port}" for port in ports]
    built = [
        build_server(
            capacity=capacity,
            token=token,
            name=f"n{i}",
            port=port,
            peers=tuple(a for a in addresses if a != addresses[i]),
            leave_drain_s=0.0,  # the data-path tests watch no node leave: the wait is idle
        )
        for i, port in enumerate(ports)
    ]
    for server, _ in built:
        await server.start()
    services = [service for _, service in built]
    if dead_after_ms is not None:
        for service in services:
            assert service.gossip is not None
            service.gossip.table.dead_after_ms = dead_after_ms
    try:
        while len({s.gossip.view_id for s in services if s.gossip}) != 1 or any(
            s.gossip is not None and len(s.gossip.table.view().names) != count for s in services
        ):
            await asyncio.sleep(0.05)
        yield addresses, services
    finally:
        stopped = await asyncio.gather(
            *(server.stop(grace_s=0.2) for server, _ in built),
            return_exceptions=True,
        )
        errors = [error for error in stopped if isinstance(error, BaseException)]
        if errors:
            raise errors[0]
