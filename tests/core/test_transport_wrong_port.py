"""A dialer that reaches a gRPC server (a wrong port in a peer list) is told so.

A gRPC server opens with an HTTP/2 SETTINGS frame, which our framing would read as a
6,148-byte frame before the handshake; the dialer names the likely cause instead.
"""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest
import uvloop

from blocks.core.errors import Unavailable
from blocks.core.net import TcpTransport
from blocks.core.net.connection import _is_http2_settings
from blocks.core.transport import FrameKind, encode_frame


def test_dialing_a_grpc_server_names_the_protocol() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()

    async def body() -> None:
        client = TcpTransport("a", listen=None, peers={"b": ("127.0.0.1", port)})
        try:
            with pytest.raises(Unavailable, match="HTTP/2"):
                await client.request("b", "x", timeout_s=5)
        finally:
            await client.close()

    try:
        uvloop.run(body())
    finally:
        server.stop(None)


def test_none_of_our_small_frames_reads_as_http2_settings() -> None:
    for frame in ([FrameKind.WELCOME, "b"], [FrameKind.WELCOME, ""], [FrameKind.GOAWAY, None]):
        assert not _is_http2_settings(encode_frame(frame) + bytes(16))
    settings = bytes([0, 0, 0x18, 0x04, 0, 0, 0, 0, 0]) + bytes(24)
    assert _is_http2_settings(settings)
