"""Transport benchmark: echo round trips between two processes, gRPC versus framed msgpack.

The server is a second process (``python -m benchmarks.transport --serve``) on uvloop that
answers on three paths, each decoding and re-encoding a small msgpack message as a real node
would:

* ``grpc-unary``: grpc.aio, one unary call per request (generic handlers, bytes in and out);
* ``grpc-stream``: grpc.aio bidirectional streams, one request then its reply per stream
  turn (one stream per concurrent worker);
* ``tcp-msgpack``: ``blocks.core.net.TcpTransport``, all requests pipelined on one
  connection.

Two workloads: ``sequential`` (one request at a time) and ``inflight-64`` (64 concurrent
workers). Run it with ``python -m benchmarks.transport`` or ``blocks bench transport``; results
(JSON, Markdown table, plot) go to ``<out>/transport``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
import uvloop

from benchmarks.harness import ROUNDS_DEFAULT, Contender, Workload, progress, run_benchmark
from blocks.core.codec import pack, unpack
from blocks.core.net import TcpTransport

SERVICE = "bench.Echo"
MESSAGE = {"op": "get", "key": "user:0000012345", "value": b"v" * 64, "version": 7}
MESSAGE_BYTES = pack(MESSAGE)


# --- server process ---------------------------------------------------------------------------


async def _unary(request: bytes, context: Any) -> bytes:
    return pack(unpack(request))


async def _stream(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for request in requests:
        yield pack(unpack(request))


async def _echo(source: str, message: Any) -> Any:
    return message


async def _serve() -> None:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary),
            "Stream": grpc.stream_stream_rpc_method_handler(_stream),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    tcp = TcpTransport("server")
    await tcp.start()
    tcp.serve(_echo)
    assert tcp.address is not None
    print(json.dumps({"grpc": grpc_port, "tcp": tcp.address[1]}), flush=True)
    # Run until the parent closes our stdin.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await tcp.close()
    await server.stop(grace=None)


# --- contenders -------------------------------------------------------------------------------


def _contenders(ports: dict[str, int]) -> list[Contender]:
    target = f"127.0.0.1:{ports['grpc']}"

    async def grpc_unary_setup() -> tuple[grpc.aio.Channel, Any]:
        channel = grpc.aio.insecure_channel(target)
        await channel.channel_ready()
        return channel, channel.unary_unary(f"/{SERVICE}/Unary")

    async def grpc_unary_op(state: tuple[grpc.aio.Channel, Any], index: int) -> None:
        unpack(await state[1](pack(MESSAGE)))

    async def grpc_stream_setup() -> tuple[grpc.aio.Channel, Any, asyncio.Queue[Any]]:
        channel = grpc.aio.insecure_channel(target)
        await channel.channel_ready()
        return channel, channel.stream_stream(f"/{SERVICE}/Stream"), asyncio.Queue()

    async def grpc_stream_op(state: tuple[Any, Any, asyncio.Queue[Any]], index: int) -> None:
        _, method, idle = state
        call = idle.get_nowait() if not idle.empty() else method()
        await call.write(pack(MESSAGE))
        unpack(await call.read())
        idle.put_nowait(call)

    async def grpc_teardown(state: tuple[Any, ...]) -> None:
        if len(state) == 3:
            while not state[2].empty():
                await state[2].get_nowait().done_writing()
        await state[0].close()

    async def tcp_setup() -> TcpTransport:
        return TcpTransport("client", listen=None, peers={"server": ("127.0.0.1", ports["tcp"])})

    async def tcp_op(client: TcpTransport, index: int) -> None:
        await client.request("server", MESSAGE)

    async def tcp_teardown(client: TcpTransport) -> None:
        await client.close()

    return [
        Contender("grpc-unary", grpc_unary_setup, grpc_unary_op, grpc_teardown),
        Contender("grpc-stream", grpc_stream_setup, grpc_stream_op, grpc_teardown),
        Contender("tcp-msgpack", tcp_setup, tcp_op, tcp_teardown),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ops", type=int, default=3000, help="requests per round, sequential")
    parser.add_argument("--rounds", type=int, default=ROUNDS_DEFAULT)


def main(args: argparse.Namespace) -> int:
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.transport", "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        ports = json.loads(server.stdout.readline())
        progress(f"[transport] server process {server.pid} on ports {ports}")
        workloads = [
            Workload("sequential", ops=args.ops, rounds=args.rounds, warmup_ops=300),
            Workload("inflight-64", ops=args.ops * 5, concurrency=64, rounds=args.rounds),
        ]
        results = run_benchmark(
            "transport", workloads, _contenders(ports), baseline="grpc-unary", out_dir=args.out
        )
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    base = next(r for r in results if r.workload == "sequential" and r.contender == "grpc-unary")
    print("| workload | contender | req/s | p50 ms | p99 ms | x grpc-unary sequential |")
    print("|---|---|---:|---:|---:|---:|")
    for r in results:
        ratio = r.throughput / base.throughput if base.throughput else 0.0
        print(
            f"| {r.workload} | {r.contender} | {r.throughput:,.0f} | {r.p50_ms:.3f} "
            f"| {r.p99_ms:.3f} | {ratio:.2f} |"
        )
    return 0


if __name__ == "__main__":
    if "--serve" in sys.argv:
        uvloop.run(_serve())
    else:
        parser = argparse.ArgumentParser(prog="python -m benchmarks.transport")
        parser.add_argument("--out", default="results", help="results directory")
        add_arguments(parser)
        sys.exit(main(parser.parse_args()))
