"""Pub-sub benchmark: blocks.pubsub versus NATS JetStream and Redis Streams, one load generator.

Every contender's server runs as its own process on 127.0.0.1; the same Python load generator
(asyncio, one client per contender) drives them in one run, with the same number of
concurrent callers for every contender in a workload, each awaiting its acknowledgement:

* ``produce``: one record per call, 32 concurrent callers. blocks: ``client.produce`` (the
  client coalesces the calls waiting at the same moment into batches on its TCP data path);
  NATS: ``await js.publish`` (nats-py has one connection and pipelines the 32 publishes on it);
  Redis: ``await XADD``. So every contender has 32 records in flight;
* ``produce-batch-100``: 100 records per call (``items_per_op`` 100), 4 concurrent callers.
  blocks: one ``produce_batch``; NATS: 100 publishes gathered (400 in flight); Redis: a
  pipeline of 100 XADDs;
* ``end-to-end``: produce one record, then read it back from the log (publish-to-read
  latency), 8 concurrent callers.

Contenders: ``blocks-durable`` (acknowledged after an fsync shared by every batch that
arrived during the previous one), ``blocks-fsync-never``, ``blocks-cluster-3`` (three
replicating broker processes, ``acks=all``, fsync per group commit), ``nats-jetstream`` (file
storage, nats-py; nats-server 2.9 acknowledges before any fsync and has no option to fsync
each write, so it compares with ``blocks-fsync-never``) and ``redis-streams`` (XADD/XRANGE,
redis-py, appendfsync everysec). Peers are skipped with a reason when their server or client
library is missing. Install them with::

    apt-get install -y nats-server redis-server
    pip install nats-py redis
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
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
VALUE = b"x" * 100


# --- blocks -----------------------------------------------------------------------------------


def blocks_contender(name: str, fsync: str, batch: int, end_to_end: bool) -> Contender:
    async def setup() -> dict[str, Any]:
        from blocks.pubsub.client import connect

        port, directory = free_port(), tempfile.mkdtemp(prefix="bench-pubsub-")
        argv = [
            sys.executable,
            "-m",
            "blocks",
            "pubsub",
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
        topic = f"bench-{time.monotonic_ns()}"
        await client.create_topic(topic, partitions=4)
        return {"process": process, "dir": directory, "client": client, "topic": topic}

    async def op(state: dict[str, Any], i: int) -> None:
        client, topic = state["client"], state["topic"]
        if batch > 1:
            await client.produce_batch(topic, i % 4, [(None, VALUE)] * batch)
            return
        partition, offset = await client.produce(topic, VALUE)
        if end_to_end:
            await client.fetch(topic, partition, offset, 1)

    async def teardown(state: dict[str, Any]) -> None:
        await state["client"].close()
        stop_process(state["process"], state["dir"])

    return Contender(name, setup, op, teardown, items_per_op=batch)


def cluster_contender(batch: int, end_to_end: bool) -> Contender:
    """Three broker processes replicating every partition; the client knows all three."""
    names = ["b1", "b2", "b3"]

    async def setup() -> dict[str, Any]:
        from blocks.pubsub.client import connect

        grpc_ports = {n: free_port() for n in names}
        cluster_ports = {n: free_port() for n in names}
        directory = tempfile.mkdtemp(prefix="bench-pubsub-cluster-")
        processes = []
        for name in names:
            argv = [sys.executable, "-m", "blocks", "pubsub", "serve", "--node-id", name]
            argv += [
                "--listen",
                f"127.0.0.1:{grpc_ports[name]}",
                "--data-dir",
                directory + "/" + name,
            ]
            argv += ["--cluster-listen", f"127.0.0.1:{cluster_ports[name]}"]
            for peer in names:
                if peer != name:
                    argv += ["--peer", f"{peer}=127.0.0.1:{cluster_ports[peer]}"]
            processes.append(start_process(argv, grpc_ports[name]))
        client = await connect([f"127.0.0.1:{grpc_ports[n]}" for n in names])
        topic = f"bench-{time.monotonic_ns()}"
        await client.create_topic(topic, partitions=4)
        await asyncio.sleep(0.5)  # let every broker learn the topic
        return {"processes": processes, "dir": directory, "client": client, "topic": topic}

    async def op(state: dict[str, Any], i: int) -> None:
        client, topic = state["client"], state["topic"]
        if batch > 1:
            await client.produce_batch(topic, i % 4, [(None, VALUE)] * batch)
            return
        partition, offset = await client.produce(topic, VALUE)
        if end_to_end:
            await client.fetch(topic, partition, offset, 1)

    async def teardown(state: dict[str, Any]) -> None:
        await state["client"].close()
        for process in state["processes"]:
            stop_process(process, state["dir"])

    return Contender("blocks-cluster-3", setup, op, teardown, items_per_op=batch)


# --- NATS JetStream -------------------------------------------------------------------------


def nats_contender(batch: int, end_to_end: bool) -> Contender:
    async def setup() -> dict[str, Any]:
        try:
            import nats
        except ImportError:
            raise Skip("nats-py is not installed (pip install nats-py)") from None
        server = start_nats_server()
        connection = await nats.connect(f"nats://127.0.0.1:{server.port}")
        stream = connection.jetstream()
        await stream.add_stream(name="BENCH", subjects=["bench.*"])
        return {"server": server, "nc": connection, "js": stream}

    async def op(state: dict[str, Any], i: int) -> None:
        stream = state["js"]
        if batch > 1:
            await asyncio.gather(*(stream.publish(f"bench.{i % 4}", VALUE) for _ in range(batch)))
            return
        ack = await stream.publish(f"bench.{i % 4}", VALUE)
        if end_to_end:
            await stream.get_msg("BENCH", seq=ack.seq)

    async def teardown(state: dict[str, Any]) -> None:
        await state["nc"].close()
        state["server"].stop()

    return Contender("nats-jetstream", setup, op, teardown, items_per_op=batch)


# --- Redis Streams ----------------------------------------------------------------------------


def redis_contender(batch: int, end_to_end: bool) -> Contender:
    async def setup() -> dict[str, Any]:
        try:
            import redis.asyncio as redis
        except ImportError:
            raise Skip("redis-py is not installed (pip install redis)") from None
        server = start_redis_server()
        return {"server": server, "r": redis.Redis(port=server.port)}

    async def op(state: dict[str, Any], i: int) -> None:
        client = state["r"]
        key = f"bench:{i % 4}"
        if batch > 1:
            pipe = client.pipeline(transaction=False)
            for _ in range(batch):
                pipe.xadd(key, {"v": VALUE})
            await pipe.execute()
            return
        entry = await client.xadd(key, {"v": VALUE})
        if end_to_end:
            await client.xrange(key, min=entry, max=entry)

    async def teardown(state: dict[str, Any]) -> None:
        await state["r"].aclose()
        state["server"].stop()

    return Contender("redis-streams", setup, op, teardown, items_per_op=batch)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ops", type=int, default=3000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=3)


def main(args: argparse.Namespace) -> int:
    shapes = [
        ("produce", 1, False, 32, args.ops),
        ("produce-batch-100", 100, False, 4, max(1, args.ops // 50)),
        ("end-to-end", 1, True, 8, args.ops // 2),
    ]
    for workload_name, batch, end_to_end, concurrency, ops in shapes:
        contenders = [
            blocks_contender("blocks-durable", "batch", batch, end_to_end),
            blocks_contender("blocks-fsync-never", "never", batch, end_to_end),
            cluster_contender(batch, end_to_end),
            nats_contender(batch, end_to_end),
            redis_contender(batch, end_to_end),
        ]
        workload = Workload(workload_name, ops=ops, concurrency=concurrency, rounds=args.rounds)
        run_benchmark(f"pubsub-{workload_name}", [workload], contenders, "blocks-durable", args.out)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="results")  # ``blocks bench`` adds it itself
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
