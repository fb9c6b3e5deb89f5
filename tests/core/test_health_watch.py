"""A graceful stop is not held by a client watching health: the server's ``Watch`` streams
send ``NOT_SERVING`` and end when shutdown begins (``blocks.core.health``), and a ``Watch``
opened after that answers ``NOT_SERVING`` and ends at once. With grpc's own servicer the stop
below waits out its whole grace (20 s) for the open stream."""

from __future__ import annotations

import asyncio
import time

import grpc
import grpc.aio
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blocks.core.server import Server

GRACE_S = 20.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _statuses(stream: grpc.aio.UnaryStreamCall) -> list[int]:
    """The statuses the stream sends until it ends (``read`` only: gRPC refuses to mix it
    with iteration on one call)."""
    statuses = []
    while (reply := await stream.read()) is not grpc.aio.EOF:
        statuses.append(reply.status)
    return statuses


def test_a_watched_server_stops_without_waiting_out_its_grace() -> None:
    async def body() -> None:
        server = Server()
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            stream = stub.Watch(health_pb2.HealthCheckRequest(service=""))
            first = await stream.read()
            assert first.status == SERVING
            rest = asyncio.ensure_future(_statuses(stream))
            started = time.monotonic()
            await server.stop(GRACE_S)
            took_s = time.monotonic() - started
            assert took_s < GRACE_S / 4, f"the stop waited {took_s:.1f} s for the watch"
            statuses = await asyncio.wait_for(rest, 5)  # the stream ended: no error raised
            assert statuses and set(statuses) == {NOT_SERVING}, statuses
            assert await stream.code() == grpc.StatusCode.OK
        finally:
            await channel.close()

    uvloop.run(asyncio.wait_for(body(), 60))


def test_a_watch_opened_during_the_drain_answers_not_serving_and_ends() -> None:
    async def body() -> None:
        server = Server(drain_delay_s=2.0)  # serving calls, health already NOT_SERVING
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            stopping = asyncio.ensure_future(server.stop(GRACE_S))
            await asyncio.sleep(0.5)
            stream = stub.Watch(health_pb2.HealthCheckRequest(service=""))
            assert await asyncio.wait_for(_statuses(stream), 5) == [NOT_SERVING]
            await asyncio.wait_for(stopping, GRACE_S / 2)
        finally:
            await channel.close()

    uvloop.run(asyncio.wait_for(body(), 60))
