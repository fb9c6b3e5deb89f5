"""Queue benchmark: blocks.queue versus NATS JetStream and Redis Streams as work queues.

Same Python load generator, every server its own process on 127.0.0.1 started for its own
rounds only, 32 concurrent callers for every contender, each awaiting every acknowledgement:

* ``send``: one acknowledged (durable where the contender is) send per call;
* ``work-cycle``: send, receive, ack: the full life of one job (end-to-end latency). Every
  contender receives the same way: one receive of at most one job that waits up to
  ``RECEIVE_WAIT_S`` (1 s) for one to arrive (blocks: ``wait_ms=1000``; NATS: ``fetch(1,
  timeout=1)``; Redis: ``XREADGROUP ... COUNT 1 BLOCK 1000``), then an ack of what came.

Contenders, durable ones beside their non-durable twins: ``blocks-durable`` (the baseline:
acknowledged after an fsync shared by every call that arrived during the previous one) and
``blocks-fsync-never``; ``nats-jetstream`` (work-queue stream, pull consumer, explicit ack;
nats-server acknowledges writes in the page cache and syncs every two minutes, so it compares
with ``blocks-fsync-never``) and ``nats-jetstream-sync-always`` (``sync_interval: always``,
nats-server 2.10 or later, a skipped row with the reason on older ones); in ``work-cycle``
also ``nats-jetstream (ack_sync)``, whose acks wait for the server's confirmation as blocks'
do, where plain ``ack`` only sends one; ``redis-streams`` (XADD, XREADGROUP, XACK;
``appendfsync everysec``) and ``redis-streams-fsync-always``. ``blocks API over nats-jetstream``
is ``NatsQueue`` (#20) on the same nats-server (``--adapter-overhead`` runs only it beside
the raw nats-py rows, benchmarks/_adapters.py). The blocks client coalesces the
calls made while a frame is in flight into one frame on its TCP data path; nats-py and
redis-py pipeline theirs on one connection. Peers are skipped with a reason when missing.
Install them with::

    apt-get install -y nats-server redis-server
    pip install nats-py redis
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
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
BODY = b"j" * 100
CONCURRENCY = 32  # callers in every workload
RECEIVE_WAIT_S = 1.0  # how long every contender's receive waits for a job


async def queue_api_ready(state: dict[str, Any]) -> None:
    """A contender driven through the ``Queue`` API (``state["q"]``) is ready when it can
    receive from ``jobs``."""
    await state["q"].receive("jobs", max_messages=1, wait_ms=0)


def queue_api_op(cycle: bool) -> Any:
    """One operation through the ``Queue`` API in ``state["q"]``: a send, and with ``cycle``
    a receive and an ack too. The one-node, replicated and NATS-adapter rows share it."""

    async def op(state: dict[str, Any], i: int) -> None:
        queue = state["q"]
        await queue.send("jobs", BODY)
        if cycle:
            wait_ms = int(RECEIVE_WAIT_S * 1000)
            for message in await queue.receive("jobs", max_messages=1, wait_ms=wait_ms):
                await queue.ack("jobs", message.receipt)

    return op


def blocks_contender(name: str, fsync: str, cycle: bool) -> Contender:
    async def setup() -> dict[str, Any]:
        from blocks.queue.client import connect

        port, directory = free_port(), tempfile.mkdtemp(prefix="bench-queue-")
        argv = [sys.executable, "-m", "blocks", "queue", "serve", "--listen"]
        argv += [f"127.0.0.1:{port}", "--data-dir", directory, "--fsync", fsync]
        state: dict[str, Any] = {"dir": directory}
        state["process"] = start_process(argv, port, grpc_health_serving)
        try:
            state["q"] = await connect([f"127.0.0.1:{port}"])
            await state["q"].create_queue("jobs")
        except BaseException:
            await teardown(state)
            raise
        return state

    ready, op = queue_api_ready, queue_api_op(cycle)

    async def teardown(state: dict[str, Any]) -> None:
        try:
            if "q" in state:
                await state["q"].close()
        finally:
            stop_process(state["process"], state["dir"])

    return Contender(name, setup, op, teardown, ready=ready)


def nats_contender(
    cycle: bool, *, confirmed_ack: bool = False, sync_always: bool = False
) -> Contender:
    """``confirmed_ack``: ``ack_sync``, which waits for the server as a blocks ``ack`` does;
    nats-py's plain ``ack`` only sends the acknowledgement."""

    async def setup() -> dict[str, Any]:
        try:
            import nats
            from nats.js.api import RetentionPolicy
        except ImportError:
            raise Skip("nats-py is not installed (pip install nats-py)") from None
        state: dict[str, Any] = {"server": start_nats_server(sync_always=sync_always)}
        state["nc"] = await nats.connect(f"nats://127.0.0.1:{state['server'].port}")
        state["js"] = stream = state["nc"].jetstream()
        await stream.add_stream(
            name="JOBS", subjects=["jobs"], retention=RetentionPolicy.WORK_QUEUE
        )
        # One pull subscription per concurrent caller, all bound to one durable consumer:
        # nats-py's fetch on a shared subscription lets concurrent callers take each other's
        # replies and then wait out their timeouts, which would measure the misuse.
        pulls: asyncio.Queue[Any] = asyncio.Queue()
        state["pulls"] = pulls
        for _ in range(CONCURRENCY):
            pulls.put_nowait(await stream.pull_subscribe("jobs", durable="workers"))
        return state

    async def ready(state: dict[str, Any]) -> None:
        await state["js"].account_info()

    async def op(state: dict[str, Any], i: int) -> None:
        await state["js"].publish("jobs", BODY)
        if cycle:
            from nats.errors import TimeoutError as NatsTimeout

            pull = await state["pulls"].get()
            try:
                messages = await pull.fetch(1, timeout=RECEIVE_WAIT_S)
            except NatsTimeout:
                return  # nothing arrived within the wait, as a blocks receive may find
            finally:
                state["pulls"].put_nowait(pull)
            for message in messages:
                await (message.ack_sync() if confirmed_ack else message.ack())

    async def teardown(state: dict[str, Any]) -> None:
        try:
            if "nc" in state:
                await state["nc"].close()
        finally:
            state["server"].stop()

    name = "nats-jetstream-sync-always" if sync_always else "nats-jetstream"
    if confirmed_ack:
        name += " (ack_sync)"
    return Contender(name, setup, op, teardown, ready=ready)


def redis_contender(cycle: bool, *, appendfsync: str = "everysec") -> Contender:
    async def setup() -> dict[str, Any]:
        try:
            import redis.asyncio as redis
        except ImportError:
            raise Skip("redis-py is not installed (pip install redis)") from None
        state: dict[str, Any] = {"server": start_redis_server(appendfsync=appendfsync)}
        state["r"] = client = redis.Redis(port=state["server"].port)
        await client.xgroup_create("jobs", "workers", id="0", mkstream=True)
        return state

    async def ready(state: dict[str, Any]) -> None:
        await state["r"].ping()

    async def op(state: dict[str, Any], i: int) -> None:
        client = state["r"]
        await client.xadd("jobs", {"b": BODY})
        if cycle:
            found = await client.xreadgroup(
                "workers",
                f"w{i % 8}",
                {"jobs": ">"},
                count=1,
                block=int(RECEIVE_WAIT_S * 1000),
            )
            for _, entries in found or []:
                for entry_id, _ in entries:
                    await client.xack("jobs", "workers", entry_id)

    async def teardown(state: dict[str, Any]) -> None:
        try:
            if "r" in state:
                await state["r"].aclose()
        finally:
            state["server"].stop()

    name = "redis-streams" if appendfsync == "everysec" else f"redis-streams-fsync-{appendfsync}"
    return Contender(name, setup, op, teardown, ready=ready)


# --- the NATS adapter (#20): NatsQueue on the same nats-server as the raw client ------------


def nats_adapter_contender(cycle: bool) -> Contender:
    """``blocks API over nats-jetstream``: ``NatsQueue`` (a work-queue stream, one durable
    pull consumer, acks confirmed by the server) on the same server as ``nats-jetstream``;
    its acks wait for the server, so in ``work-cycle`` its like is ``(ack_sync)``."""

    async def setup() -> dict[str, Any]:
        try:
            from blocks.queue.adapters.nats import NatsQueue
        except ImportError:
            raise Skip("nats-py is not installed (pip install nats-py)") from None
        state: dict[str, Any] = {"server": start_nats_server()}
        try:
            state["q"] = await NatsQueue.open(f"nats://127.0.0.1:{state['server'].port}")
            await state["q"].create_queue("jobs")
        except BaseException:
            await teardown(state)
            raise
        return state

    ready, op = queue_api_ready, queue_api_op(cycle)

    async def teardown(state: dict[str, Any]) -> None:
        try:
            if "q" in state:
                await state["q"].close()
        finally:
            state["server"].stop()

    return Contender(ADAPTER_ROW.format(engine="nats-jetstream"), setup, op, teardown, ready=ready)


def adapter_overhead(args: argparse.Namespace) -> int:
    """Only the raw nats-py rows and ``blocks API over nats-jetstream``: ``send`` against
    ``nats-jetstream``, ``work-cycle`` against ``nats-jetstream (ack_sync)`` (both wait for
    the server's ack of the ack)."""
    for workload_name, cycle, baseline in (
        ("send", False, nats_contender(False)),
        ("work-cycle", True, nats_contender(True, confirmed_ack=True)),
    ):
        run_overhead(
            f"queue-adapter-{workload_name}",
            overhead_workload(workload_name, args, concurrency=CONCURRENCY),
            [baseline, nats_adapter_contender(cycle)],
            baseline.name,
            args.out,
        )
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ops", type=int, default=2000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=ROUNDS_DEFAULT)
    parser.add_argument("--quick", action="store_true", help="200 operations per round")
    add_overhead_arguments(parser)


def contenders(cycle: bool) -> list[Contender]:
    return [
        blocks_contender("blocks-durable", "batch", cycle),
        blocks_contender("blocks-fsync-never", "never", cycle),
        nats_contender(cycle),
        nats_contender(cycle, sync_always=True),
        *([nats_contender(cycle, confirmed_ack=True)] if cycle else []),
        redis_contender(cycle),
        redis_contender(cycle, appendfsync="always"),
        nats_adapter_contender(cycle),
    ]


def main(args: argparse.Namespace) -> int:
    if getattr(args, "adapter_overhead", False):
        return adapter_overhead(args)
    ops = 200 if getattr(args, "quick", False) else args.ops
    for workload_name, cycle in (("send", False), ("work-cycle", True)):
        workload = Workload(
            workload_name,
            ops=ops,
            concurrency=CONCURRENCY,
            rounds=args.rounds,
            warmup_ops=max(1, ops // 10),
        )
        run_benchmark(
            f"queue-{workload_name}", [workload], contenders(cycle), "blocks-durable", args.out
        )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="results")  # ``blocks bench`` adds it itself
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
