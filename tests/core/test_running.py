"""``blocks.core.running``: the server serves inside the block and is stopped on the way
out, also when the block raises (the exception passes on unchanged)."""

from __future__ import annotations

import asyncio

import pytest

from blocks.core.running import running
from blocks.core.server import Server, ServerState


def test_running_starts_the_server_and_stops_it_after_the_block() -> None:
    async def body() -> None:
        server = Server()
        async with running(server, grace_s=0.1) as served:
            assert served is server
            assert server.state is ServerState.SERVING
        assert server.state is ServerState.STOPPED

    asyncio.run(body())


def test_running_stops_the_server_when_the_block_raises() -> None:
    async def body() -> None:
        server = Server()
        with pytest.raises(KeyError, match="boom"):
            async with running(server, grace_s=0.1):
                raise KeyError("boom")
        assert server.state is ServerState.STOPPED

    asyncio.run(body())
