"""Pub-sub benchmark: blocks.pubsub versus NATS JetStream and Redis Streams, one load generator.

Every contender's server runs as its own process on 127.0.0.1, started for its own rounds only
(the harness starts it before each round and stops it after); the same Python load generator
(asyncio, one client per contender) drives them, with the same number of concurrent callers
for every contender in a workload, each awaiting its acknowledgement:

* ``produce``: one record per call, 32 concurrent callers. blocks: ``client.produce`` (the
  client coalesces the calls waiting at the same moment into batches on its TCP data path);
  NATS: ``await js.publish`` (nats-py has one connection and pipelines the 32 publishes on it);
  Redis: ``await XADD``. So every contender has 32 records in flight;
* ``produce-batch-100``: 100 records per call (``items_per_op`` 100), 4 concurrent callers,
  each call done when all 100 are acknowledged. blocks: one ``produce_batch``; NATS: the
  asynchronous JetStream publish, 100 publishes sent at once with their reply subjects, then
  all 100 acknowledgements awaited (what nats.go's ``PublishAsync`` and
  ``PublishAsyncComplete`` do); Redis: a pipeline of 100 XADDs;
* ``end-to-end``: produce one record, then read it back from the log (publish-to-read
  latency), 8 concurrent callers.

Contenders, durable ones beside their non-durable twins:

* ``blocks-durable`` (the baseline: acknowledged after an fsync shared by every batch that
  arrived during the previous one) and ``blocks-fsync-never``;
* ``blocks-cluster-3``: three replicating broker processes, ``acks=all``, fsync per group
  commit;
* ``nats-jetstream``: file storage, nats-py; nats-server acknowledges writes that are in the
  page cache and syncs every two minutes: compare it with ``blocks-fsync-never``;
* ``nats-jetstream-sync-always``: the same with ``sync_interval: always`` (an fsync before
  every acknowledgement; nats-server 2.10 or later, a skipped row with the reason on older
  ones): compare it with ``blocks-durable``;
* ``redis-streams`` (XADD/XRANGE, redis-py, ``appendfsync everysec``) and
  ``redis-streams-fsync-always`` (``appendfsync always``).
* ``blocks API over nats-jetstream``: ``NatsPubSub`` (#20) on the same nats-server as
  ``nats-jetstream``; ``--adapter-overhead`` runs only these two, the raw client the
  baseline (benchmarks/_adapters.py).

Peers are skipped with a reason when their server or client library is missing. Install::

    apt-get install -y nats-server redis-server
    pip install nats-py redis
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._adapters import (
    ADAPTER_ROW,
    add_overhead_arguments,
    overhead_workload,
    run_overhead,
)
from benchmarks.harness import ROUNDS_DEFAULT, Contender, Skip, Workload, run_benchmark
from benchmarks.peers import (
    free_port,
    grpc_health_serving,
    start_nats_server,
    start_process,
    start_redis_server,
    stop_process,
)

REQUIREMENTS = ["nats-py", "redis"]
VALUE = b"x" * 100
PARTITIONS = 4
ACKS_TIMEOUT_S = 30.0  # a batch whose acknowledgements take longer fails its round


# --- blocks -----------------------------------------------------------------------------------


async def _blocks_op(state: dict[str, Any], i: int, batch: int, end_to_end: bool) -> None:
    client, topic = state["client"], state["topic"]
    if batch > 1:
        await client.produce_batch(topic, i % PARTITIONS, [(None, VALUE)] * batch)
        return
    partition, offset = await client.produce(topic, VALUE)
    if end_to_end:
        await client.fetch(topic, partition, offset, 1)


async def _blocks_ready(state: dict[str, Any]) -> None:
    """A read of every partition: each broker that leads one knows the topic."""
    for partition in range(PARTITIONS):
        await state["client"].fetch(state["topic"], partition, 0, 1)


async def _blocks_client(state: dict[str, Any], addresses: list[str]) -> dict[str, Any]:
    from blocks.pubsub.client import connect

    try:
        state["client"] = await connect(addresses)
        state["topic"] = f"bench-{time.monotonic_ns()}"
        await state["client"].create_topic(state["topic"], partitions=PARTITIONS)
    except BaseException:
        await _blocks_teardown(state)
        raise
    return state


async def _blocks_teardown(state: dict[str, Any]) -> None:
    try:
        if "client" in state:
            await state["client"].close()
    finally:
        for process in state["processes"]:
            stop_process(process, state["dir"])


def blocks_contender(name: str, fsync: str, batch: int, end_to_end: bool) -> Contender:
    async def setup() -> dict[str, Any]:
        port, directory = free_port(), tempfile.mkdtemp(prefix="bench-pubsub-")
        argv = [sys.executable, "-m", "blocks", "pubsub", "serve", "--listen"]
        argv += [f"127.0.0.1:{port}", "--data-dir", directory, "--fsync", fsync]
        state: dict[str, Any] = {"processes": [], "dir": directory}
        state["processes"].append(start_process(argv, port, grpc_health_serving))
        return await _blocks_client(state, [f"127.0.0.1:{port}"])

    async def op(state: dict[str, Any], i: int) -> None:
        await _blocks_op(state, i, batch, end_to_end)

    return Contender(name, setup, op, _blocks_teardown, batch, ready=_blocks_ready)


def cluster_contender(batch: int, end_to_end: bool, against: str | None = None) -> Contender:
    """Three broker processes replicating every partition; the client knows all three. With
    ``against`` (another checkout's ``src`` directory) the brokers run that code (the client
    stays this tree's): a before/after in one run."""
    names = ["b1", "b2", "b3"]
    python = [sys.executable]
    if against is not None:
        python = ["env", f"PYTHONPATH={Path(against).resolve()}", sys.executable]

    async def setup() -> dict[str, Any]:
        grpc_ports = {n: free_port() for n in names}
        cluster_ports = {n: free_port() for n in names}
        directory = tempfile.mkdtemp(prefix="bench-pubsub-cluster-")
        state: dict[str, Any] = {"processes": [], "dir": directory}
        for name in names:
            argv = [*python, "-m", "blocks", "pubsub", "serve", "--node-id", name]
            argv += ["--listen", f"127.0.0.1:{grpc_ports[name]}"]
            argv += ["--data-dir", f"{directory}/{name}"]
            argv += ["--cluster-listen", f"127.0.0.1:{cluster_ports[name]}"]
            for peer in names:
                if peer != name:
                    argv += ["--peer", f"{peer}=127.0.0.1:{cluster_ports[peer]}"]
            state["processes"].append(start_process(argv, grpc_ports[name], grpc_health_serving))
        return await _blocks_client(state, [f"127.0.0.1:{grpc_ports[n]}" for n in names])

    async def op(state: dict[str, Any], i: int) -> None:
        await _blocks_op(state, i, batch, end_to_end)

    name = CLUSTER if against is None else f"{CLUSTER}, servers from {against}"
    return Contender(name, setup, op, _blocks_teardown, batch, ready=_blocks_ready)


CLUSTER = "blocks-cluster-3"


# --- NATS JetStream -------------------------------------------------------------------------


class _AsyncAcks:
    """Acknowledgements of asynchronous JetStream publishes, counted per batch.

    Every publish of batch ``b`` carries the reply subject ``<inbox>.<b>``; the server answers
    each with a publish acknowledgement (JSON with ``seq``) or an error. The batch's future
    completes when all its acknowledgements are in, and fails on the first error.
    """

    def __init__(self, inbox: str) -> None:
        self.inbox = inbox
        self.pending: dict[str, tuple[list[int], asyncio.Future[None]]] = {}
        self.batch_ids = itertools.count()

    async def handle(self, message: Any) -> None:
        entry = self.pending.get(message.subject.rsplit(".", 1)[-1])
        if entry is None or entry[1].done():
            return
        remaining, future = entry
        if not message.data or b'"error"' in message.data:
            reason = message.data[:200] or f"status {getattr(message, 'headers', None)}"
            future.set_exception(RuntimeError(f"JetStream refused a publish: {reason!r}"))
            return
        remaining[0] -= 1
        if remaining[0] == 0:
            future.set_result(None)

    async def publish(self, connection: Any, subject: str, count: int) -> None:
        batch_id = str(next(self.batch_ids))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending[batch_id] = ([count], future)
        try:
            reply = f"{self.inbox}.{batch_id}"
            for _ in range(count):
                await connection.publish(subject, VALUE, reply=reply)
            await asyncio.wait_for(future, ACKS_TIMEOUT_S)
        finally:
            del self.pending[batch_id]


def nats_contender(batch: int, end_to_end: bool, *, sync_always: bool = False) -> Contender:
    async def setup() -> dict[str, Any]:
        try:
            import nats
        except ImportError:
            raise Skip("nats-py is not installed (pip install nats-py)") from None
        state: dict[str, Any] = {"server": start_nats_server(sync_always=sync_always)}
        state["nc"] = await nats.connect(f"nats://127.0.0.1:{state['server'].port}")
        state["js"] = state["nc"].jetstream()
        await state["js"].add_stream(name="BENCH", subjects=["bench.*"])
        state["acks"] = acks = _AsyncAcks(state["nc"].new_inbox())
        await state["nc"].subscribe(f"{acks.inbox}.*", cb=acks.handle)
        return state

    async def ready(state: dict[str, Any]) -> None:
        await state["js"].account_info()

    async def op(state: dict[str, Any], i: int) -> None:
        stream = state["js"]
        subject = f"bench.{i % PARTITIONS}"
        if batch > 1:
            await state["acks"].publish(state["nc"], subject, batch)
            return
        ack = await stream.publish(subject, VALUE)
        if end_to_end:
            await stream.get_msg("BENCH", seq=ack.seq)

    async def teardown(state: dict[str, Any]) -> None:
        try:
            if "nc" in state:
                await state["nc"].close()
        finally:
            state["server"].stop()

    name = "nats-jetstream-sync-always" if sync_always else "nats-jetstream"
    return Contender(name, setup, op, teardown, batch, ready=ready)


# --- Redis Streams ----------------------------------------------------------------------------


def redis_contender(batch: int, end_to_end: bool, *, appendfsync: str = "everysec") -> Contender:
    async def setup() -> dict[str, Any]:
        try:
            import redis.asyncio as redis
        except ImportError:
            raise Skip("redis-py is not installed (pip install redis)") from None
        server = start_redis_server(appendfsync=appendfsync)
        return {"server": server, "r": redis.Redis(port=server.port)}

    async def ready(state: dict[str, Any]) -> None:
        await state["r"].ping()

    async def op(state: dict[str, Any], i: int) -> None:
        client = state["r"]
        key = f"bench:{i % PARTITIONS}"
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
        try:
            await state["r"].aclose()
        finally:
            state["server"].stop()

    name = "redis-streams" if appendfsync == "everysec" else f"redis-streams-fsync-{appendfsync}"
    return Contender(name, setup, op, teardown, batch, ready=ready)


# --- the NATS adapter (#20): NatsPubSub on the same nats-server as the raw client -----------


def nats_adapter_contender(batch: int, end_to_end: bool) -> Contender:
    """``blocks API over nats-jetstream``: ``NatsPubSub`` (a stream per partition, a
    ``Nats-Msg-Id`` per record) on the same server configuration as ``nats-jetstream``."""

    async def setup() -> dict[str, Any]:
        try:
            from blocks.pubsub.adapters.nats import NatsPubSub
        except ImportError:
            raise Skip("nats-py is not installed (pip install nats-py)") from None
        state: dict[str, Any] = {"server": start_nats_server()}
        try:
            state["pubsub"] = await NatsPubSub.open(f"nats://127.0.0.1:{state['server'].port}")
            await state["pubsub"].create_topic("bench", partitions=PARTITIONS)
        except BaseException:
            await teardown(state)
            raise
        return state

    async def ready(state: dict[str, Any]) -> None:
        await state["pubsub"].end_offsets("bench", 0)

    async def op(state: dict[str, Any], i: int) -> None:
        pubsub = state["pubsub"]
        if batch > 1:
            await pubsub.produce_batch("bench", i % PARTITIONS, [(None, VALUE)] * batch)
            return
        partition, offset = await pubsub.produce("bench", VALUE, partition=i % PARTITIONS)
        if end_to_end:
            await pubsub.fetch("bench", partition, offset, 1)

    async def teardown(state: dict[str, Any]) -> None:
        try:
            if "pubsub" in state:
                await state["pubsub"].close()
        finally:
            state["server"].stop()

    name = ADAPTER_ROW.format(engine="nats-jetstream")
    return Contender(name, setup, op, teardown, batch, ready=ready)


def adapter_overhead(args: argparse.Namespace, shapes: list[tuple[str, int, bool, int]]) -> int:
    """Only ``nats-jetstream`` and ``blocks API over nats-jetstream``, each workload shape
    with its concurrency, the raw client as the baseline."""
    for workload_name, batch, end_to_end, concurrency in shapes:
        run_overhead(
            f"pubsub-adapter-{workload_name}",
            overhead_workload(workload_name, args, concurrency=concurrency, items_per_op=batch),
            [nats_contender(batch, end_to_end), nats_adapter_contender(batch, end_to_end)],
            "nats-jetstream",
            args.out,
        )
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ops", type=int, default=3000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=ROUNDS_DEFAULT)
    parser.add_argument("--quick", action="store_true", help="300 operations per round")
    parser.add_argument(
        "--against",
        "--before-src",
        dest="against",
        help="run only blocks-cluster-3, from this tree and from another checkout's src "
        "directory (before/after, interleaved, the other checkout the baseline)",
    )
    add_overhead_arguments(parser)


def contenders(batch: int, end_to_end: bool) -> list[Contender]:
    return [
        blocks_contender("blocks-durable", "batch", batch, end_to_end),
        blocks_contender("blocks-fsync-never", "never", batch, end_to_end),
        cluster_contender(batch, end_to_end),
        nats_contender(batch, end_to_end),
        nats_contender(batch, end_to_end, sync_always=True),
        redis_contender(batch, end_to_end),
        redis_contender(batch, end_to_end, appendfsync="always"),
        nats_adapter_contender(batch, end_to_end),
    ]


def main(args: argparse.Namespace) -> int:
    ops = 300 if getattr(args, "quick", False) else args.ops
    shapes = [
        ("produce", 1, False, 32, ops),
        ("produce-batch-100", 100, False, 4, max(1, ops // 50)),
        ("end-to-end", 1, True, 8, max(1, ops // 2)),
    ]
    if getattr(args, "adapter_overhead", False):
        return adapter_overhead(args, [shape[:4] for shape in shapes])
    against = getattr(args, "against", None)
    for workload_name, batch, end_to_end, concurrency, count in shapes:
        workload = Workload(
            workload_name,
            ops=count,
            concurrency=concurrency,
            rounds=args.rounds,
            warmup_ops=max(1, count // 10),
        )
        if against is None:
            chosen, baseline = contenders(batch, end_to_end), "blocks-durable"
        else:
            before = cluster_contender(batch, end_to_end, against)
            chosen, baseline = [before, cluster_contender(batch, end_to_end)], before.name
        run_benchmark(f"pubsub-{workload_name}", [workload], chosen, baseline, args.out)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="results")  # ``blocks bench`` adds it itself
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
