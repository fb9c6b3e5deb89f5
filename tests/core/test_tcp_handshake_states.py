"""The TCP connection's handshake as explicit states (issue 17, item 4).

``blocks.core.net.limits`` holds the states (GREETING, OPEN, CLOSED) and the one table of legal
moves; ``net/connection.py`` asks the state, never a stand-in such as an unset peer name. Here
the table is checked whole, and a listener is checked to act on it: nothing but a HELLO is
taken while greeting, and a HELLO is not taken once open.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from blocks.core.errors import PeerError
from blocks.core.net import TcpTransport
from blocks.core.net.limits import TRANSITIONS, ConnectionLife, ConnectionState
from blocks.core.transport import FrameDecoder, FrameKind, encode_frame, error_from_wire

HELLO = encode_frame([FrameKind.HELLO, "raw", None])


def _life_in(state: ConnectionState) -> ConnectionLife:
    life = ConnectionLife()
    if state is not ConnectionState.GREETING:
        if state is ConnectionState.OPEN:
            life.to(ConnectionState.OPEN)
        else:
            life.to(ConnectionState.CLOSED)
    assert life.state is state
    return life


def test_the_table_names_every_state_and_only_goes_forward() -> None:
    assert set(TRANSITIONS) == set(ConnectionState)
    assert TRANSITIONS[ConnectionState.GREETING] == {ConnectionState.OPEN, ConnectionState.CLOSED}
    assert TRANSITIONS[ConnectionState.OPEN] == {ConnectionState.CLOSED}
    assert TRANSITIONS[ConnectionState.CLOSED] == frozenset()  # closed is final


@pytest.mark.parametrize("source", list(ConnectionState))
@pytest.mark.parametrize("target", list(ConnectionState))
def test_each_move_is_taken_or_refused_as_the_table_says(
    source: ConnectionState, target: ConnectionState
) -> None:
    life = _life_in(source)
    if target in TRANSITIONS[source]:
        life.to(target)
        assert life.state is target
    else:
        with pytest.raises(AssertionError):
            life.to(target)
        assert life.state is source  # an illegal move leaves the state as it was


async def _exchange(
    data: bytes, counters: dict[str, int] | None = None
) -> tuple[list[list[Any]], list[Any]]:
    """Send ``data`` raw to a listener; the frames it sent back and the messages it handled
    (and its counters, into ``counters`` if given)."""
    handled: list[Any] = []

    async def record(source: str, message: Any) -> Any:
        handled.append(message)
        return message

    server = TcpTransport("b")
    await server.start()
    server.serve(record)
    try:
        assert server.address is not None
        reader, writer = await asyncio.open_connection(*server.address)
        try:
            writer.write(data)
            await writer.drain()
            decoder, frames = FrameDecoder(), []
            while chunk := await asyncio.wait_for(reader.read(65536), 10):
                frames.extend(decoder.feed(chunk))
        finally:
            writer.close()
        if counters is not None:
            counters.update(server.counters)
        return frames, handled
    finally:
        await server.close()


@pytest.mark.parametrize(
    "first",
    [
        encode_frame([FrameKind.REQUEST, 1, "before hello"]),
        encode_frame([FrameKind.ONEWAY, "before hello"]),
        encode_frame([FrameKind.WELCOME, "a listener's answer"]),
    ],
)
def test_a_greeting_connection_takes_only_hello(first: bytes) -> None:
    frames, handled = asyncio.run(asyncio.wait_for(_exchange(first + HELLO), 30))
    assert [frame[0] for frame in frames] == [FrameKind.GOAWAY]
    error = error_from_wire(frames[0][1])
    assert isinstance(error, PeerError) and "expected HELLO" in str(error)
    assert handled == []


def test_an_open_connection_refuses_a_second_hello() -> None:
    request = encode_frame([FrameKind.REQUEST, 1, "after hello"])
    frames, handled = asyncio.run(asyncio.wait_for(_exchange(HELLO + HELLO + request), 30))
    assert frames[0][0] is FrameKind.WELCOME
    assert frames[-1][0] is FrameKind.GOAWAY
    assert isinstance(error_from_wire(frames[-1][1]), PeerError)
    assert "after hello" not in handled  # nothing after the bad frame is run


def test_a_connection_closed_by_a_goaway_handles_nothing_after_it() -> None:
    before = encode_frame([FrameKind.REQUEST, 1, "before close"])
    goaway = encode_frame([FrameKind.GOAWAY, None])
    out_of_order = encode_frame([FrameKind.WELCOME, "not the dialer's to send"])
    after = encode_frame([FrameKind.REQUEST, 2, "after close"])
    counters: dict[str, int] = {}
    data = HELLO + before + goaway + out_of_order + after
    frames, handled = asyncio.run(asyncio.wait_for(_exchange(data, counters), 30))
    assert frames[0][0] is FrameKind.WELCOME
    assert "after close" not in handled
    assert counters.get("peer_errors", 0) == 0  # the WELCOME after close was never looked at


async def _refused_then(
    later: bytes, counters: dict[str, int]
) -> tuple[list[list[Any]], list[Any]]:
    """Greet with a REQUEST (refused: GOAWAY, the listener lingers closed), wait for the GOAWAY,
    then send ``later`` in a separate segment while the listener still lingers."""
    handled: list[Any] = []

    async def record(source: str, message: Any) -> Any:
        handled.append(message)
        return message

    server = TcpTransport("b")
    await server.start()
    server.serve(record)
    try:
        assert server.address is not None
        reader, writer = await asyncio.open_connection(*server.address)
        decoder, frames = FrameDecoder(), []
        try:
            writer.write(encode_frame([FrameKind.REQUEST, 1, "before hello"]))
            while not frames:
                chunk = await asyncio.wait_for(reader.read(65536), 10)
                assert chunk, "closed before the GOAWAY"
                frames.extend(decoder.feed(chunk))
            writer.write(later)
            await writer.drain()
            writer.write_eof()
            while chunk := await asyncio.wait_for(reader.read(65536), 10):
                frames.extend(decoder.feed(chunk))
        except ConnectionError:
            pass  # the listener may have closed for good meanwhile: nothing was handled
        finally:
            writer.close()
        await asyncio.sleep(0.05)  # a handler started by the late frames would have run
        counters.update(server.counters)
        return frames, handled
    finally:
        await server.close()


def test_a_closed_connection_drops_frames_that_arrive_later() -> None:
    later = HELLO + encode_frame([FrameKind.REQUEST, 2, "after close"])
    counters: dict[str, int] = {}
    frames, handled = asyncio.run(asyncio.wait_for(_refused_then(later, counters), 30))
    assert [frame[0] for frame in frames] == [FrameKind.GOAWAY]  # no WELCOME for the late HELLO
    assert handled == []
    assert counters["peer_errors"] == 1  # the greeting REQUEST; the late frames were dropped
