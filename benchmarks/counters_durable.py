"""Durable counters benchmark: increments/s of ``blocks counters serve --data-dir`` against
Redis ``INCR`` with the same durability.

Issue #18's benchmark. What durability ours gives: a node with ``--data-dir`` applies an
increment, appends its record to its log and answers only once the record is fsynced, with
group commit (``fsync="batch"`` of ``blocks.core.log``: the calls that arrive while one fsync
runs share the next). Redis's equal is ``appendfsync always``: it writes and fsyncs the
append-only file before it sends the replies of the commands one event-loop pass ran, so
concurrent clients share an fsync there too. That is the baseline, ``redis INCR (appendfsync
always)``; ``redis INCR (appendfsync everysec)``, which acknowledges writes that may be lost
in the last second, is shown beside it as the weaker setting Redis is usually run with.

Same Python load generator, every server its own process on 127.0.0.1 started for its own
rounds only (the shared harness), ``CONCURRENCY`` callers for every contender, each awaiting
its reply, increments spread over ``COUNTER_NAMES`` counters. Our client is gRPC
(``CountersClient``, one channel); redis-py pipelines its calls over a connection pool.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from typing import Any

from benchmarks.harness import ROUNDS_DEFAULT, Contender, Skip, Workload, run_benchmark
from benchmarks.peers import (
    free_port,
    grpc_health_serving,
    start_process,
    start_redis_server,
    stop_process,
)

CONCURRENCY = 16  # callers, every contender
COUNTER_NAMES = 100
BASELINE = "redis INCR (appendfsync always)"


def _name(index: int) -> str:
    return f"c{index % COUNTER_NAMES}"


def blocks_contender() -> Contender:
    async def setup() -> dict[str, Any]:
        from blocks.counters.client import CountersClient

        port, directory = free_port(), tempfile.mkdtemp(prefix="bench-counters-")
        argv = [sys.executable, "-m", "blocks", "counters", "serve", "--name", "bench"]
        argv += ["--listen", f"127.0.0.1:{port}", "--data-dir", directory]
        state: dict[str, Any] = {"dir": directory}
        state["process"] = start_process(argv, port, grpc_health_serving)
        state["client"] = CountersClient(f"127.0.0.1:{port}")
        return state

    async def ready(state: dict[str, Any]) -> None:
        await state["client"].value("c0")

    async def op(state: dict[str, Any], i: int) -> None:
        await state["client"].increment(_name(i))

    async def teardown(state: dict[str, Any]) -> None:
        try:
            await state["client"].close()
        finally:
            stop_process(state["process"], state["dir"])

    return Contender(
        "blocks counters --data-dir (fsync, group commit)", setup, op, teardown, ready=ready
    )


def redis_contender(appendfsync: str) -> Contender:
    async def setup() -> dict[str, Any]:
        try:
            import redis.asyncio as redis
        except ImportError:
            raise Skip("redis-py is not installed (pip install redis)") from None
        state: dict[str, Any] = {"server": start_redis_server(appendfsync=appendfsync)}
        state["r"] = redis.Redis(port=state["server"].port)
        return state

    async def ready(state: dict[str, Any]) -> None:
        await state["r"].ping()

    async def op(state: dict[str, Any], i: int) -> None:
        await state["r"].incr(_name(i))

    async def teardown(state: dict[str, Any]) -> None:
        try:
            await state["r"].aclose()
        finally:
            state["server"].stop()

    return Contender(f"redis INCR (appendfsync {appendfsync})", setup, op, teardown, ready=ready)


def contenders() -> list[Contender]:
    return [blocks_contender(), redis_contender("always"), redis_contender("everysec")]


def workload(ops: int, rounds: int) -> Workload:
    return Workload(
        f"increment-{CONCURRENCY}-in-flight",
        ops=ops,
        concurrency=CONCURRENCY,
        rounds=rounds,
        warmup_ops=max(1, ops // 10),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ops", type=int, default=5000, help="increments per round")
    parser.add_argument("--rounds", type=int, default=ROUNDS_DEFAULT)
    parser.add_argument("--quick", action="store_true", help="500 increments, 3 rounds")


def main(args: argparse.Namespace) -> int:
    quick = getattr(args, "quick", False)
    ops, rounds = (500, 3) if quick else (args.ops, args.rounds)
    run_benchmark("counters-durable", [workload(ops, rounds)], contenders(), BASELINE, args.out)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="results")  # ``blocks bench`` adds it itself
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
