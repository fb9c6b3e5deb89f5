"""Cache nodes that gossip with each other, started in process for the data-path tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from blocks.cache.service import CacheService, build_server
from blocks.testing.ports import free_ports


@asynccontextmanager
async def gossiping_nodes(
    count: int, *, capacity: int, token: str
) -> AsyncIterator[tuple[list[str], list[CacheService]]]:
    """``count`` nodes ``n0``.. on free ports, each given the others as peers; yields their
    addresses and services once every node's view holds all of them, and stops them after."""
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
    try:
        while len({s.gossip.view_id for s in services if s.gossip}) != 1 or any(
            s.gossip is not None and len(s.gossip.table.view().names) != count for s in services
        ):
            await asyncio.sleep(0.05)
        yield addresses, services
    finally:
        for server, _ in built:
            await server.stop(grace_s=0.2)
