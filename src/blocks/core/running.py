"""``running``: a ``Server`` started for the length of an ``async with`` block.

The demos (and anything else that serves for a while, then stops) start a server, use it,
and stop it whether the use raised or not; this is that one piece.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from blocks.core.server import Server

__all__ = ["running"]


@asynccontextmanager
async def running(server: Server, *, grace_s: float = 1.0) -> AsyncIterator[Server]:
    """Start ``server`` (its errors pass through, nothing to stop) and give it; on the way
    out stop it with ``grace_s`` for calls in flight, whether the block raised or not (its
    exception then passes on unchanged)."""
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace_s=grace_s)
