"""TcpTransport beyond the shared contract: hostile bytes, tokens, reconnects, pipelining, bounds.

Raw sockets play the misbehaving peer; every test runs under a wall-clock bound and closes
what it opened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvloop

from blocks.core.errors import Cancelled, Overloaded, PeerError, Unauthenticated, Unavailable
from blocks.core.net import TcpTransport
from blocks.core.transport import FrameDecoder, FrameKind, encode_frame, error_from_wire


def _run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 20))


async def _echo(source: str, message: Any) -> Any:
    return message


async def _server(**options: Any) -> TcpTransport:
    server = TcpTransport("b", **options)
    await server.start()
    server.serve(_echo)
    return server


def _client(server: TcpTransport, **options: Any) -> TcpTransport:
    assert server.address is not None
    return TcpTransport("a", listen=None, peers={"b": server.address}, **options)


async def _raw_exchange(server: TcpTransport, data: bytes) -> list[list[Any]]:
    """Send ``data`` on a raw socket and return every frame received until the server hangs up."""
    assert server.address is not None
    reader, writer = await asyncio.open_connection(*server.address)
    try:
        writer.write(data)
        await writer.drain()
        decoder, frames = FrameDecoder(), []
        while chunk := await asyncio.wait_for(reader.read(65536), 5):
            frames.extend(decoder.feed(chunk))
        return frames
    finally:
        writer.close()


HELLO = encode_frame([FrameKind.HELLO, "raw", None])


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x00\x00\x02\xc1\xc1",  # not msgpack
        b"\xff\xff\xff\xff",  # declares a 4 GiB frame
        encode_frame([FrameKind.REPLY, 1, "servers do not take replies"]),
        encode_frame([99, "unknown kind"]),
    ],
)
@pytest.mark.parametrize("after_hello", [False, True])
def test_bad_frames_get_goaway_peer_error_and_server_survives(
    garbage: bytes, after_hello: bool
) -> None:
    async def body() -> None:
        server = await _server()
        client = _client(server)
        try:
            frames = await _raw_exchange(server, (HELLO if after_hello else b"") + garbage)
            assert frames[-1][0] is FrameKind.GOAWAY
            assert isinstance(error_from_wire(frames[-1][1]), PeerError)
            assert server.stats()["peer_errors"] == 1
            assert await client.request("b", "still serving") == "still serving"
        finally:
            await client.close()
            await server.close()

    _run(body)


def test_oversize_frames_are_refused_by_the_listener() -> None:
    async def body() -> None:
        server = await _server(frame_bytes_max=1024)
        try:
            big = encode_frame([FrameKind.REQUEST, 1, b"x" * 4096])
            frames = await _raw_exchange(server, HELLO + big)
            assert [frame[0] for frame in frames] == [FrameKind.WELCOME, FrameKind.GOAWAY]
            assert isinstance(error_from_wire(frames[1][1]), PeerError)
        finally:
            await server.close()

    _run(body)


def test_a_silent_peer_is_dropped_after_the_handshake_timeout() -> None:
    async def body() -> None:
        server = await _server(handshake_timeout_s=0.1)
        try:
            frames = await _raw_exchange(server, b"")
            assert [frame[0] for frame in frames] == [FrameKind.GOAWAY]
        finally:
            await server.close()

    _run(body)


@pytest.mark.parametrize("client_token", [None, "wrong", "secret-but-longer"])
def test_missing_or_wrong_token_is_rejected(client_token: str | None) -> None:
    async def body() -> None:
        server = await _server(token="secret")
        client = _client(server, token=client_token)
        try:
            with pytest.raises(Unauthenticated):
                await client.request("b", 1)
            assert server.stats()["unauthenticated"] == 1
            raw = await _raw_exchange(server, encode_frame([FrameKind.HELLO, "raw", 12345]))
            assert isinstance(error_from_wire(raw[-1][1]), Unauthenticated)
        finally:
            await client.close()
            await server.close()

    _run(body)


def test_right_token_is_accepted_and_a_server_without_token_accepts_all() -> None:
    async def body() -> None:
        guarded, open_server = await _server(token="secret"), await _server()
        clients = [_client(guarded, token="secret"), _client(open_server, token="anything")]
        try:
            for client in clients:
                assert await client.request("b", 5) == 5
        finally:
            for transport in (*clients, guarded, open_server):
                await transport.close()

    _run(body)


def test_reconnects_after_the_peer_restarts() -> None:
    async def body() -> None:
        server = await _server()
        assert server.address is not None
        port = server.address[1]
        client = _client(server, backoff_initial_s=0.05, backoff_max_s=0.2)
        try:
            assert await client.request("b", 1) == 1
            await server.close()
            with pytest.raises(Unavailable):
                await client.request("b", 2, timeout_s=1)
            server = await _server(listen=("127.0.0.1", port))
            # The request waits out the dial backoff, then dials the new process.
            assert await client.request("b", 3, timeout_s=2) == 3
            assert client.stats()["dials"] >= 2
        finally:
            await client.close()
            await server.close()

    _run(body)


def test_backoff_fails_fast_when_the_deadline_is_shorter() -> None:
    async def body() -> None:
        server = await _server()
        client = _client(server, backoff_initial_s=5.0, backoff_max_s=5.0)
        await server.close()
        try:
            with pytest.raises(Unavailable):
                await client.request("b", 1, timeout_s=1)
            dials = client.stats()["dials"]
            with pytest.raises(Unavailable):
                await client.request("b", 1, timeout_s=1)
            assert client.stats()["dials"] == dials  # did not hammer the dead peer
        finally:
            await client.close()

    _run(body)


def test_add_peer_moves_to_a_new_address() -> None:
    async def body() -> None:
        first, second = await _server(), await _server()
        client = _client(first)
        try:
            assert await client.request("b", 1) == 1
            assert second.address is not None
            client.add_peer("b", second.address)
            assert await client.request("b", 2) == 2
            assert second.stats()["connections_accepted"] == 1
        finally:
            for transport in (client, first, second):
                await transport.close()

    _run(body)


def test_requests_pipeline_on_one_connection() -> None:
    async def body() -> None:
        arrived: list[int] = []
        all_in = asyncio.Event()

        async def reverse_finish(source: str, message: Any) -> Any:
            arrived.append(message)
            if len(arrived) == 64:
                all_in.set()
            await all_in.wait()  # no reply until all 64 are in flight at once
            await asyncio.sleep(0.001 * (64 - message))
            return message * 2

        server = await _server()
        server.serve(reverse_finish)
        client = _client(server)
        try:
            replies = await asyncio.gather(*(client.request("b", n) for n in range(64)))
            assert replies == [n * 2 for n in range(64)]
            assert sorted(arrived) == list(range(64))
            assert client.stats()["dials"] == 1
            assert server.stats()["connections_accepted"] == 1
        finally:
            await client.close()
            await server.close()

    _run(body)


@pytest.mark.parametrize("side", ["caller", "listener"])
def test_in_flight_is_bounded(side: str) -> None:
    async def body() -> None:
        async def slow(source: str, message: Any) -> Any:
            await asyncio.sleep(0.1)
            return message

        server = await _server(in_flight_max=3 if side == "listener" else 100)
        server.serve(slow)
        client = _client(server, in_flight_max=3 if side == "caller" else 100)
        try:
            outcomes = await asyncio.gather(
                *(client.request("b", n) for n in range(5)), return_exceptions=True
            )
            assert outcomes[:3] == [0, 1, 2]
            assert all(isinstance(o, Overloaded) for o in outcomes[3:])
            assert await client.request("b", 9) == 9  # the bound frees up again
        finally:
            await client.close()
            await server.close()

    _run(body)


async def _fake_listener(reply: Callable[[list[Any]], bytes]) -> asyncio.Server:
    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder()
        try:
            while chunk := await reader.read(65536):
                for frame in decoder.feed(chunk):
                    writer.write(reply(frame))
        finally:
            writer.close()

    return await asyncio.start_server(on_connect, "127.0.0.1", 0)


@pytest.mark.parametrize(
    "reply",
    [
        lambda frame: b"\x00\x00\x00\x01\xc1",
        lambda frame: encode_frame([FrameKind.WELCOME, "not-b"]),
        lambda frame: encode_frame([FrameKind.REQUEST, 1, "listeners do not ask"]),
    ],
    ids=["garbage", "wrong-name", "wrong-kind"],
)
def test_a_misbehaving_listener_is_a_peer_error(reply: Callable[[list[Any]], bytes]) -> None:
    async def body() -> None:
        fake = await _fake_listener(reply)
        address = fake.sockets[0].getsockname()[:2]
        client = TcpTransport("a", listen=None, peers={"b": address})
        try:
            with pytest.raises(PeerError):
                await client.request("b", 1, timeout_s=2)
        finally:
            await client.close()
            fake.close()
            await fake.wait_closed()

    _run(body)


def test_works_on_uvloop() -> None:
    async def body() -> None:
        server = await _server()
        client = _client(server)
        try:
            replies = await asyncio.gather(*(client.request("b", n) for n in range(100)))
            assert replies == list(range(100))
        finally:
            await client.close()
            await server.close()

    uvloop.run(asyncio.wait_for(body(), 20))


def test_close_while_dialing_cancels_the_request() -> None:
    async def body() -> None:
        server = await _server()
        client = _client(server)
        try:
            waiting = asyncio.ensure_future(client.request("b", 1, timeout_s=10))
            await asyncio.sleep(0)  # the request is now dialing
            await client.close()
            with pytest.raises(Cancelled):
                await waiting
        finally:
            await server.close()

    _run(body)
