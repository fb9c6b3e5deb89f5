"""TcpTransport's bounds on what strangers and peers can make a listener hold (``TcpLimits``).

Raw sockets play the peer. Each test asserts on the listener's own accounting
(``stats()["buffered_bytes"]``, the gauges and breach counters) and on what the peer is told
(``GOAWAY`` with the reason), and checks that a well-behaved client is still served.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from blocks.core.errors import InvalidArgument, Overloaded, PeerError
from blocks.core.net import TcpTransport
from blocks.core.net.limits import ConnectionLife, ConnectionState, TcpLimits
from blocks.core.transport import FRAME_BYTES_MAX, FrameDecoder, FrameKind, encode_frame
from blocks.core.transport import error_from_wire as from_wire

HELLO = encode_frame([FrameKind.HELLO, "raw", None])
KIB = 1024
MIB = 1024 * KIB


def _run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 60))


async def _echo(source: str, message: Any) -> Any:
    return message


async def _server(**options: Any) -> TcpTransport:
    server = TcpTransport("b", **options)
    await server.start()
    server.serve(_echo)
    return server


async def _still_serves(server: TcpTransport) -> None:
    assert server.address is not None
    client = TcpTransport("a", listen=None, peers={"b": server.address}, token=server.token)
    try:
        assert await client.request("b", "still serving", timeout_s=20) == "still serving"
    finally:
        await client.close()


Raw = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _open(server: TcpTransport, data: bytes = b"") -> Raw:
    assert server.address is not None
    reader, writer = await asyncio.open_connection(*server.address)
    if data:
        writer.write(data)
        await writer.drain()
    return reader, writer


async def _frames_until_closed(raw: Raw, timeout_s: float = 20) -> list[list[Any]]:
    reader, writer = raw
    decoder, frames = FrameDecoder(), []
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), timeout_s):
            frames.extend(decoder.feed(chunk))
    finally:
        writer.close()
    return frames


async def _next_frame(raw: Raw) -> list[Any]:
    decoder = FrameDecoder()
    while True:
        chunk = await asyncio.wait_for(raw[0].read(65536), 20)
        assert chunk, "the listener hung up"
        if frames := decoder.feed(chunk):
            return frames[0]


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached within 20 s")


def _declared(length: int) -> bytes:
    return length.to_bytes(4, "big")


def test_a_big_frame_before_the_handshake_is_refused_after_a_few_kib() -> None:
    async def body() -> None:
        server = await _server(token="secret", handshake_timeout_s=30)
        try:
            raw = await _open(server, _declared(FRAME_BYTES_MAX) + b"\x91" * (64 * KIB))
            frames = await _frames_until_closed(raw)
            assert [frame[0] for frame in frames] == [FrameKind.GOAWAY]
            error = from_wire(frames[0][1])
            assert isinstance(error, PeerError) and "before the handshake" in str(error)
            stats = server.stats()
            assert stats["frames_too_large_before_handshake"] == 1
            assert stats["buffered_bytes"] == 0
            await _still_serves(server)
        finally:
            await server.close()

    _run(body)


@pytest.mark.parametrize("after_hello", [False, True])
@pytest.mark.parametrize("prefix", [b"\xff\xff\xff\xff", _declared(FRAME_BYTES_MAX + 1)])
def test_huge_length_prefixes_are_refused_and_counted(prefix: bytes, after_hello: bool) -> None:
    async def body() -> None:
        server = await _server()
        try:
            frames = await _frames_until_closed(await _open(server, HELLO * after_hello + prefix))
            assert frames[-1][0] is FrameKind.GOAWAY
            assert isinstance(from_wire(frames[-1][1]), PeerError)
            counter = "frames_too_large" if after_hello else "frames_too_large_before_handshake"
            assert server.stats()[counter] == 1
            await _still_serves(server)
        finally:
            await server.close()

    _run(body)


def test_many_partial_frames_before_auth_hold_a_few_kib_each() -> None:
    async def body() -> None:
        limits = TcpLimits(handshake_timeout_s=30)
        server = await _server(token="secret", limits=limits)
        try:
            # A frame that fits the handshake limit but never completes: held until the
            # timeout, and never more than the handshake limit per connection.
            prefix = _declared(limits.handshake_frame_bytes_max) + b"\x93" * 1000
            raws = [await _open(server, prefix) for _ in range(60)]
            await _until(lambda: server.stats()["buffered_bytes"] == 60 * 1004)
            assert server.stats()["connections_greeting"] == 60
            for _, writer in raws:  # the rest of the frame: not msgpack, so each is dropped
                writer.write(b"\x93" * (8 * KIB))
            for raw in raws:
                frames = await _frames_until_closed(raw)
                assert isinstance(from_wire(frames[-1][1]), PeerError)
            await _until(lambda: server.stats()["buffered_bytes"] == 0)
            assert server.stats()["peer_errors"] == 60
            await _still_serves(server)
        finally:
            await server.close()

    _run(body)


def test_frames_in_progress_after_auth_are_bounded_over_all_connections() -> None:
    async def body() -> None:
        limits = TcpLimits(frame_bytes_max=1 * MIB, buffered_bytes_max=2 * MIB)
        server = await _server(limits=limits)
        try:
            raws = [await _open(server, HELLO) for _ in range(4)]
            for raw in raws:
                assert (await _next_frame(raw))[0] is FrameKind.WELCOME
            partial = _declared(1 * MIB) + b"\x91" * (900 * KIB)  # never completed
            for raw in raws:
                raw[1].write(partial)
            # Two partial frames fit the budget; the two connections that cross it (whichever
            # the listener reads last) are dropped, told why.
            readers = {asyncio.ensure_future(_frames_until_closed(raw)) for raw in raws}
            dropped: set[asyncio.Future[list[list[Any]]]] = set()
            while len(dropped) < 2:
                done, _ = await asyncio.wait(
                    readers - dropped, timeout=20, return_when="FIRST_COMPLETED"
                )
                assert done, "no connection was dropped"
                dropped |= done
            errors = [from_wire(reader.result()[-1][1]) for reader in dropped]
            assert all(isinstance(error, Overloaded) for error in errors), errors
            assert "budget" in str(errors[0])
            await _until(lambda: server.stats()["connections"] == 2)
            stats = server.stats()
            assert stats["buffer_budget_exceeded"] == 2
            assert stats["buffered_bytes"] <= limits.buffered_bytes_max
            await _still_serves(server)
            for reader in readers - dropped:  # closes the survivors' sockets
                reader.cancel()
            await _until(lambda: server.stats()["buffered_bytes"] == 0)
        finally:
            await server.close()

    _run(body)


def test_connections_and_greeting_connections_are_capped() -> None:
    async def body() -> None:
        limits = TcpLimits(connections_max=4, handshaking_max=2, handshake_timeout_s=30)
        server = await _server(limits=limits)
        try:
            silent = [await _open(server) for _ in range(2)]
            await _until(lambda: server.stats()["connections_greeting"] == 2)
            refused = await _frames_until_closed(await _open(server))
            assert isinstance(from_wire(refused[-1][1]), Overloaded)
            assert server.stats()["handshakes_refused"] == 1
            for raw in silent:  # greeting done: they no longer count against handshaking_max
                raw[1].write(HELLO)
                assert (await _next_frame(raw))[0] is FrameKind.WELCOME
            more = [await _open(server, HELLO) for _ in range(2)]
            for raw in more:
                assert (await _next_frame(raw))[0] is FrameKind.WELCOME
            refused = await _frames_until_closed(await _open(server, HELLO))
            assert isinstance(from_wire(refused[-1][1]), Overloaded)
            assert server.stats()["connections_refused"] == 1
            for _, writer in silent + more:
                writer.close()
            await _until(lambda: server.stats()["connections"] == 0)
            await _still_serves(server)
        finally:
            await server.close()

    _run(body)


def test_a_hundred_idle_connections_do_not_hurt() -> None:
    async def body() -> None:
        server = await _server(token="secret", handshake_timeout_s=30)
        raws: list[Raw] = []
        try:
            raws = [await _open(server) for _ in range(100)]
            await _until(lambda: server.stats()["connections_greeting"] == 100)
            await _still_serves(server)
        finally:
            for _, writer in raws:
                writer.close()
            await server.close()

    _run(body)


def test_a_silent_peer_times_out_and_is_counted() -> None:
    async def body() -> None:
        server = await _server(handshake_timeout_s=0.2)
        try:
            frames = await _frames_until_closed(await _open(server))
            assert "handshake timeout" in str(from_wire(frames[-1][1]))
            assert server.stats()["handshake_timeouts"] == 1
            await _until(lambda: server.stats()["connections"] == 0)
        finally:
            await server.close()

    _run(body)


def test_connection_states_change_only_along_the_table() -> None:
    life = ConnectionLife()
    assert life.state is ConnectionState.GREETING
    life.to(ConnectionState.OPEN)
    with pytest.raises(AssertionError):
        life.to(ConnectionState.GREETING)
    assert life.state is ConnectionState.OPEN
    life.to(ConnectionState.CLOSED)
    with pytest.raises(AssertionError):
        life.to(ConnectionState.OPEN)
    assert life.state is ConnectionState.CLOSED


@pytest.mark.parametrize(
    "fields",
    [
        {"frame_bytes_max": 0},
        {"handshake_frame_bytes_max": 2 * FRAME_BYTES_MAX},
        {"buffered_bytes_max": FRAME_BYTES_MAX},  # cannot hold one whole frame
        {"connections_max": 10, "handshaking_max": 11},
        {"handshake_timeout_s": 0},
        {"in_flight_max": 1.5},
    ],
)
def test_limits_validate_when_built(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        TcpLimits(**fields)
