"""Queue benchmark: blocks.queue versus NATS JetStream and Redis Streams as work queues.

Same Python load generator, every server its own process on 127.0.0.1, one run, 32
concurrent callers for every contender, each awaiting every acknowledgement:

* ``send``: one acknowledged (durable where the contender is) send per call;
* ``work-cycle``: send, receive, ack: the full life of one job (end-to-end latency).

Contenders: ``blocks-durable`` (acknowledged after an fsync shared by every call that arrived
during the previous one), ``blocks-fsync-never``, ``nats-jetstream`` (work-queue stream,
pull consumer, explicit ack; nats-server 2.9 acknowledges before any fsync, so it compares
with ``blocks-fsync-never``; in ``work-cycle`` also ``nats-jetstream (ack_sync)``, whose acks
wait for the server's confirmation as blocks' do, where plain ``ack`` only sends one) and ``redis-streams`` (XADD, XREADGROUP, XACK; appendfsync
everysec). The blocks client coalesces the calls made while a frame is in flight into one
frame on its TCP data path; nats-py and redis-py pipeline theirs on one connection. Peers are
skipped with a reason when missing. Install them with::

    apt-get install -y nats-server redis-server
    pip install nats-py redis
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from typing import Any

from benchmarks.harness import Contender, Skip, Workload, run_benchmark
from benchmarks.peers import (
    free_port,
    start_nats_server,
    start_process,
    start_redis_server,
    stop_process,
)

REQUIREMENTS = ["nats-py", "redis"]
BODY = b"j" * 100
CONCURRENCY = 32  # callers in every workload


def blocks_contender(name: str, fsync: str, cycle: bool) -> Contender:
    async def setup() -> dict[str, Any]:
        from blocks.queue.client import connect

        port, directory = free_port(), tempfile.mkdtemp(prefix="bench-queue-")
        argv = [
            sys.executable,
            "-m",
            "blocks",
            "queue",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--data-dir",
            directory,
            "--fsync",
            fsync,
        ]
        process = start_process(argv, port)
        client = await connect([f"127.0.0.1:{port}"])
        await client.create_queue("jobs")
        return {"process": process, "dir": directory, "q": client}

    async def op(state: dict[str, Any], i: int) -> None:
        queue = state["q"]
        await queue.send("jobs", BODY)
        if cycle:
            for message in await queue.receive("jobs", max_messages=1, wait_ms=1000):
                await queue.ack("jobs", message.receipt)

    async def teardown(state: dict[str, Any]) -> None:
        await state["q"].close()
        stop_process(state["process"], state["dir"])

    return Contender(name, setup, op, teardown)


def nats_contender(cycle: bool, confirmed_ack: bool = False) -> Contender:
    """``confirmed_ack``: ``ack_sync``, which waits for the server as a blocks ``ack`` does;
    nats-py's plain ``ack`` only sends the acknowledgement."""

    async def setup() -> dict[str, Any]:
        try:
            import nats
            from nats.js.api import RetentionPolicy
        except ImportError:
            raise Skip("nats-py is not installed (pip install nats-py)") from None
        server = start_nats_server()
        connection = await nats.connect(f"nats://127.0.0.1:{server.port}")
        stream = connection.jetstream()
        await stream.add_stream(
            name="JOBS", subjects=["jobs"], retention=RetentionPolicy.WORK_QUEUE
        )
        # One pull subscription per concurrent caller, all bound to one durable consumer:
        # nats-py's fetch on a shared subscription lets concurrent callers take each other's
        # replies and then wait out their timeouts, which would measure the misuse.
        pulls: asyncio.Queue[Any] = asyncio.Queue()
        for _ in range(CONCURRENCY):
            pulls.put_nowait(await stream.pull_subscribe("jobs", durable="workers"))
        return {"server": server, "nc": connection, "js": stream, "pulls": pulls}

    async def op(state: dict[str, Any], i: int) -> None:
        await state["js"].publish("jobs", BODY)
        if cycle:
            from nats.errors import TimeoutError as NatsTimeout

            pull = await state["pulls"].get()
            try:
                for _ in range(10):  # another caller may have taken the job just sent
                    try:
                        messages = await pull.fetch(1, timeout=1)
                    except NatsTimeout:
                        continue
                    for message in messages:
                        await (message.ack_sync() if confirmed_ack else message.ack())
                    return
            finally:
                state["pulls"].put_nowait(pull)

    async def teardown(state: dict[str, Any]) -> None:
        await state["nc"].close()
        state["server"].stop()

    name = "nats-jetstream (ack_sync)" if confirmed_ack else "nats-jetstream"
    return Contender(name, setup, op, teardown)


def redis_contender(cycle: bool) -> Contender:
    async def setup() -> dict[str, Any]:
        try:
            import redis.asyncio as redis
        except ImportError:
            raise Skip("redis-py is not installed (pip install redis)") from None
        server = start_redis_server()
        client = redis.Redis(port=server.port)
        await client.xgroup_create("jobs", "workers", id="0", mkstream=True)
        return {"server": server, "r": client}

    async def op(state: dict[str, Any], i: int) -> None:
        client = state["r"]
        await client.xadd("jobs", {"b": BODY})
        if cycle:
            found = await client.xreadgroup("workers", f"w{i % 8}", {"jobs": ">"}, count=1)
            for _, entries in found:
                for entry_id, _ in entries:
                    await client.xack("jobs", "workers", entry_id)

    async def teardown(state: dict[str, Any]) -> None:
        await state["r"].aclose()
        state["server"].stop()

    return Contender("redis-streams", setup, op, teardown)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ops", type=int, default=2000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=3)


def main(args: argparse.Namespace) -> int:
    for workload_name, cycle in (("send", False), ("work-cycle", True)):
        contenders = [
            blocks_contender("blocks-durable", "batch", cycle),
            blocks_contender("blocks-fsync-never", "never", cycle),
            nats_contender(cycle),
            *([nats_contender(cycle, confirmed_ack=True)] if cycle else []),
            redis_contender(cycle),
        ]
        workload = Workload(
            workload_name, ops=args.ops, concurrency=CONCURRENCY, rounds=args.rounds
        )
        run_benchmark(f"queue-{workload_name}", [workload], contenders, "blocks-durable", args.out)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="results")  # ``blocks bench`` adds it itself
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
