"""Cache nodes that gossip with each other, started in process for the data-path tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from blocks.cache.service import CacheService, build_server
from blocks.core.server import Server
from blocks.testing.ports import free_ports


async def stop_without_leave_drain(server: Server, service: CacheService, grace_s: float) -> None:
    """Stop a node without the second its gossip waits after announcing its leave (answering
    ``StaleView`` meanwhile): the data-path tests watch no node leave, so the wait is idle."""
    if service.gossip is not None:
        service.gossip._leave_drain_s = 0.0
    await server.stop(grace_s=grace_s)


@asynccontextmanager
async def gossiping_nodes(
    count: int, *, capacity: int, token: str, dead_after_ms: int | None = None
) -> AsyncIterator[tuple[list[str], list[CacheService]]]:
    """``count`` nodes ``n0``.. on free ports, each given the others as peers; yields their
    addresses and services once every node's view holds all of them, and stops them after.

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
            *(stop_without_leave_drain(server, service, 0.2) for server, service in built),
            return_exceptions=True,
        )
        errors = [error for error in stopped if isinstance(error, BaseException)]
        if errors:
            raise errors[0]
