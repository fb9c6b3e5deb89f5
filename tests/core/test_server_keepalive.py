"""A client that holds a quiet stream open and sends keepalive pings keeps its connection.

gRPC's server closes a connection whose client pings more often than it accepts (GOAWAY
"too_many_pings" after two strikes). ``Server`` accepts a ping every ``PING_INTERVAL_MIN_MS``;
here that bound is shortened so a client pinging every second stays within it, and the
health ``Watch`` stream (a server stream that sends nothing after its first answer) must
still be open after several pings. With the option misspelt, gRPC's five-minute default
applied and the stream ended with UNAVAILABLE after the third ping.
"""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blocks.core import server as server_module
from blocks.core.server import Server

PINGS = 4  # one more than the strikes gRPC tolerates before GOAWAY
CLIENT_PING_MS = 1_000


def test_quiet_stream_survives_client_keepalive_pings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "PING_INTERVAL_MIN_MS", CLIENT_PING_MS // 2)

    async def body() -> None:
        server = Server()
        await server.start()
        options = [
            ("grpc.keepalive_time_ms", CLIENT_PING_MS),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.keepalive_permit_without_calls", 1),
        ]
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=options)
        try:
            stream = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service="")
            )
            first = await stream.read()
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            reading = asyncio.ensure_future(stream.read())
            done, _ = await asyncio.wait({reading}, timeout=(PINGS + 0.5) * CLIENT_PING_MS / 1000)
            if done:  # the stream ended or failed: the server sent GOAWAY
                error = reading.exception()
                pytest.fail(f"the quiet stream ended after keepalive pings: {error!r}")
            stream.cancel()
            reading.cancel()
        finally:
            await channel.close()
            await server.stop(0)

    uvloop.run(asyncio.wait_for(body(), 30))
