"""The router's response reader: heads, chunked and sized bodies, cut bodies, trailing data."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.inference.router_upstream import (
    BackendCut,
    BackendUnreachable,
    Response,
    Upstream,
    _Connection,
    parse_response_head,
    sse_data,
)


class FakeWriter:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def chunked(body: bytes, sizes: list[int]) -> bytes:
    out, at = b"", 0
    for size in sizes:
        piece = body[at : at + size]
        at += len(piece)
        if piece:
            out += b"%x\r\n%s\r\n" % (len(piece), piece)
    if at < len(body):
        out += b"%x\r\n%s\r\n" % (len(body) - at, body[at:])
    return out + b"0\r\n\r\n"


async def read(wire: bytes, headers: dict[str, str], feed: list[int]) -> tuple[bytes, Any]:
    """Feed ``wire`` in pieces of the given sizes; the body read and the pool afterwards."""
    reader = asyncio.StreamReader()
    at = 0
    for size in feed:
        reader.feed_data(wire[at : at + size])
        at += size
    reader.feed_data(wire[at:])
    reader.feed_eof()
    upstream = Upstream("http://127.0.0.1:1")
    conn = _Connection(reader, FakeWriter())  # type: ignore[arg-type]
    response = Response(upstream, conn, 200, headers)
    got = b"".join([data async for data in response.body_chunks(5.0)])
    return got, upstream


def test_parse_response_head() -> None:
    status, headers = parse_response_head(b"HTTP/1.1 429 Too Many\r\nRetry-After: 2\r\n\r\n")
    assert status == 429 and headers == {"retry-after": "2"}
    for bad in (b"SSH-2.0\r\n\r\n", b"HTTP/1.1 abc\r\n\r\n", b"HTTP/1.1 200 OK\r\nnocolon\r\n\r\n"):
        with pytest.raises(BackendUnreachable):
            parse_response_head(bad)


@settings(max_examples=60, deadline=None)
@given(
    st.binary(max_size=300),
    st.lists(st.integers(0, 40), max_size=10),
    st.lists(st.integers(1, 7), max_size=40),
)
def test_chunked_body_whole_whatever_the_split_and_the_next_response_left_alone(
    body: bytes, sizes: list[int], feed: list[int]
) -> None:
    trailing = b"HTTP/1.1 200 OK\r\n"  # the next response on a kept-alive connection
    wire = chunked(body, sizes) + trailing
    got, upstream = asyncio.run(read(wire, {"transfer-encoding": "chunked"}, feed))
    assert got == body
    assert len(upstream._idle) == 1  # read to the end: the connection is reusable
    assert asyncio.run(_rest(upstream)) == trailing


async def _rest(upstream: Upstream) -> bytes:
    return await upstream._idle[0].reader.read()


@given(st.binary(min_size=1, max_size=200), st.integers(0, 199))
def test_a_body_cut_short_is_backend_cut_and_the_connection_is_not_reused(
    body: bytes, keep: int
) -> None:
    keep = min(keep, len(body) - 1)
    for headers, wire in (
        ({"content-length": str(len(body))}, body[:keep]),
        ({"transfer-encoding": "chunked"}, chunked(body, [])[: keep + 3]),
    ):
        with pytest.raises(BackendCut):
            asyncio.run(read(wire, headers, []))


def test_sized_and_close_delimited_bodies() -> None:
    got, upstream = asyncio.run(read(b"hello", {"content-length": "5"}, [1, 1]))
    assert got == b"hello" and len(upstream._idle) == 1
    got, upstream = asyncio.run(read(b"until close", {}, [3]))
    assert got == b"until close" and upstream._idle == []  # the server closes: not reusable


@given(
    st.lists(
        st.text(
            st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"), max_size=20
        ),
        max_size=6,
    ),
    st.booleans(),
    st.lists(st.integers(1, 9), max_size=30),
)
def test_sse_events_are_recovered_whatever_the_reads_and_line_ends(
    payloads: list[str], crlf: bool, reads: list[int]
) -> None:
    end = "\r\n" if crlf else "\n"
    wire = "".join(f": comment{end}data: {p}{end}{end}" for p in payloads).encode()
    got: list[str] = []
    pending, at = b"", 0
    for size in [*reads, len(wire)]:
        texts, pending = sse_data(pending + wire[at : at + size])
        got += texts
        at += size
    assert got == [p.strip() for p in payloads] and pending == b""
