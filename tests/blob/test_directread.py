"""``read_exactly_direct`` reads what ``readexactly`` reads, on asyncio's loop and uvloop's:
the piece whole, the next request's bytes left to the reader, a connection that ends
mid-piece an ``IncompleteReadError``, a cancelled read giving the connection back."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from blocks.blob.s3.directread import DIRECT_READ_BYTES_MIN, read_exactly_direct

MIB = 1024 * 1024
Runner = Callable[[Coroutine[Any, Any, None]], None]
RUNNERS = {"asyncio": asyncio.run, "uvloop": uvloop.run}


async def _pair() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, socket.socket]:
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours, limit=64 * 1024)
    theirs.setblocking(False)
    return reader, writer, theirs


async def _send(sock: socket.socket, data: bytes) -> None:
    await asyncio.get_running_loop().sock_sendall(sock, data)


@pytest.mark.parametrize("loop", sorted(RUNNERS))
def test_the_piece_arrives_whole_and_the_next_request_stays_with_the_reader(loop: str) -> None:
    body = os.urandom(3 * MIB + 5)

    async def scenario() -> None:
        reader, writer, peer = await _pair()
        await _send(peer, body[:100_000])  # some of it buffered by the reader first
        await asyncio.sleep(0.05)
        sending = asyncio.create_task(_send(peer, body[100_000:] + b"NEXT REQUEST"))
        assert await read_exactly_direct(reader, len(body)) == body
        await sending
        assert await reader.readexactly(12) == b"NEXT REQUEST"
        writer.close()
        peer.close()

    RUNNERS[loop](scenario())


@pytest.mark.parametrize("loop", sorted(RUNNERS))
def test_a_piece_already_buffered_needs_no_lending(loop: str) -> None:
    async def scenario() -> None:
        reader, writer, peer = await _pair()
        data = os.urandom(DIRECT_READ_BYTES_MIN * 2)
        reader.feed_data(data + b"rest")  # as if received before the read began
        assert await read_exactly_direct(reader, len(data)) == data
        assert await reader.readexactly(4) == b"rest"
        writer.close()
        peer.close()

    RUNNERS[loop](scenario())


@pytest.mark.parametrize("loop", sorted(RUNNERS))
def test_a_connection_closed_mid_piece_is_an_incomplete_read(loop: str) -> None:
    async def scenario() -> None:
        reader, writer, peer = await _pair()
        sent = os.urandom(MIB)

        async def send_and_close() -> None:
            await _send(peer, sent)
            peer.close()

        sending = asyncio.create_task(send_and_close())
        with pytest.raises(asyncio.IncompleteReadError) as cut:
            await read_exactly_direct(reader, 2 * MIB)
        await sending
        assert cut.value.partial == sent
        writer.close()

    RUNNERS[loop](scenario())


@pytest.mark.parametrize("loop", sorted(RUNNERS))
def test_a_timed_out_read_gives_the_connection_back_to_the_reader(loop: str) -> None:
    async def scenario() -> None:
        reader, writer, peer = await _pair()
        await _send(peer, os.urandom(300_000))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await read_exactly_direct(reader, MIB)
        assert isinstance(writer.transport.get_protocol(), asyncio.StreamReaderProtocol)
        await _send(peer, b"after")
        assert await reader.readexactly(5) == b"after"
        writer.close()
        peer.close()

    RUNNERS[loop](scenario())
