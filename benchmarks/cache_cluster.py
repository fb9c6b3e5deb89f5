"""A cache cluster of three processes against one Redis: gets and puts at the same concurrency.

What is compared (issue #18's benchmark): reads, then writes, of 100-byte values over 10,000
preloaded keys, uniform (so every node takes its share), ``concurrency`` requests in flight
from one client process (asyncio tasks), through

* **blocks cache cluster**: three ``blocks cache serve`` processes joined by gossip
  (``--peer``), driven by ``MemberCluster``: the view from the nodes, data calls on each
  node's framed-TCP data path (one connection per node, every call pipelined on it and
  stamped with the view id);
* **blocks cache cluster, gRPC data calls** (``--grpc-row``): the same cluster driven with
  ``MemberCluster(data_path=False)``, the path the data path replaced;
* **redis**: one ``redis-server`` (append-only file, fsync every second, the usual cache
  setting; reads do not touch it), driven by ``redis.asyncio`` from one connection pool (one
  connection per task in flight), values msgpack-encoded and decoded as the cache client
  does.

Each contender is started for its own rounds only, preloaded with the same keys, and
measured in interleaved rounds (the shared harness). The goal in the issue: the cluster at
least 0.8x of Redis's gets. A cluster of three on one 2-core machine shares the cores with
the client, so it cannot show the scale-out a cluster gives on three machines: the ratio
measures the cost per call of the cluster's client and wire against Redis's.

    python -m benchmarks.cache_cluster --quick --out results   # about two minutes
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack

from benchmarks import _processes
from benchmarks.harness import Contender, Skip, Workload, progress, run_benchmark
from blocks.testing.ports import free_ports

KEYS = 10_000
VALUE = b"v" * 100
NODES = 3
TOKEN = "bench-token"
READY_TIMEOUT_S = 120.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="fewer operations and rounds")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument(
        "--grpc-row", action="store_true", help="also drive the cluster with gRPC data calls"
    )
    parser.add_argument("--ops", default="get,put", help="which workloads: get, put or both")


def _keys() -> list[str]:
    return [f"key:{i}" for i in range(KEYS)]


async def _cluster_setup(data_path: bool = True) -> Any:
    from blocks.cache.client import CacheClient
    from blocks.cache.discovery import MemberCluster

    ports = free_ports(NODES)
    addresses = [f"127.0.0.1:{port}" for port in ports]
    for index, address in enumerate(addresses):
        argv = [sys.executable, "-m", "blocks", "cache", "serve", "--name", f"n{index}"]
        argv += ["--listen", address, "--token", TOKEN, "--capacity", str(KEYS * 2)]
        argv += [f"--peer={peer}" for peer in addresses if peer != address]
        _processes.track_process(
            subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:  # ready: every node sees all three
        try:
            views = []
            for address in addresses:
                async with CacheClient(address, token=TOKEN, timeout_s=5.0) as node:
                    records, view_id = await node.members()
                views.append(view_id if len(records) == NODES else 0)
            if 0 not in views and len(set(views)) == 1:
                break
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise Skip(f"the cache cluster did not form within {READY_TIMEOUT_S:g} s")
        await asyncio.sleep(0.2)
    cluster = await MemberCluster.connect(
        addresses, token=TOKEN, timeout_s=10.0, data_path=data_path
    )
    if data_path and len(cluster.data_path_nodes) != NODES:
        raise Skip(f"only {cluster.data_path_nodes} announce a data path")
    for key in _keys():
        await cluster.put(key, VALUE)
    return cluster


async def _cluster_get(cluster: Any, index: int) -> None:
    value = await cluster.get(f"key:{index % KEYS}")
    assert value == VALUE, "a preloaded key missed"


async def _cluster_put(cluster: Any, index: int) -> None:
    await cluster.put(f"key:{index % KEYS}", VALUE)


async def _cluster_teardown(cluster: Any) -> None:
    await cluster.close()  # the harness stops the processes it tracked


async def _redis_setup() -> Any:
    from blocks.testing.engines import RedisServer, redis_missing

    missing = redis_missing()
    if missing is not None:
        raise Skip(missing)
    import redis.asyncio as aioredis

    server = RedisServer(tempfile.mkdtemp(prefix="bench-redis-"), appendfsync="everysec")
    server.start()
    client = aioredis.Redis(port=server.port, socket_timeout=10)
    packed = msgpack.packb(VALUE)
    keys = _keys()
    for start in range(0, KEYS, 1000):
        await client.mset({key: packed for key in keys[start : start + 1000]})
    return server, client


async def _redis_get(state: Any, index: int) -> None:
    _, client = state
    raw = await client.get(f"key:{index % KEYS}")
    assert raw is not None and msgpack.unpackb(raw) == VALUE, "a preloaded key missed"


async def _redis_put(state: Any, index: int) -> None:
    _, client = state
    await client.set(f"key:{index % KEYS}", msgpack.packb(VALUE))


async def _redis_teardown(state: Any) -> None:
    server, client = state
    await client.aclose()
    server.stop()


def main(args: Any) -> int:
    quick = getattr(args, "quick", False)
    concurrency = getattr(args, "concurrency", 16)
    kinds = [kind.strip() for kind in getattr(args, "ops", "get,put").split(",") if kind.strip()]
    if not kinds or set(kinds) - {"get", "put"}:
        raise SystemExit("--ops takes get, put or get,put")
    rng = random.Random(7)
    order = [rng.randrange(KEYS) for _ in range(1 << 16)]
    cluster_ops = {"get": _cluster_get, "put": _cluster_put}
    redis_ops = {"get": _redis_get, "put": _redis_put}
    for kind in kinds:

        async def cluster_op(state: Any, i: int, op: Any = cluster_ops[kind]) -> None:
            await op(state, order[i % len(order)])

        async def redis_op(state: Any, i: int, op: Any = redis_ops[kind]) -> None:
            await op(state, order[i % len(order)])

        contenders = [
            Contender(
                "blocks cache cluster (3 nodes)",
                _cluster_setup,
                cluster_op,
                _cluster_teardown,
                ready_timeout_s=READY_TIMEOUT_S,
            ),
            Contender("redis (1 node)", _redis_setup, redis_op, _redis_teardown),
        ]
        if getattr(args, "grpc_row", False):
            contenders.insert(
                1,
                Contender(
                    "blocks cache cluster, gRPC data calls",
                    lambda: _cluster_setup(data_path=False),
                    cluster_op,
                    _cluster_teardown,
                    ready_timeout_s=READY_TIMEOUT_S,
                ),
            )
        workload = Workload(
            f"{kind}-100B-{concurrency}-in-flight",
            ops=2_000 if quick else 20_000,
            concurrency=concurrency,
            rounds=3 if quick else 5,
            warmup_ops=200,
        )
        progress(f"[cache_cluster] {workload.name}")
        results = run_benchmark(
            f"cache_cluster-{kind}",
            [workload],
            contenders,
            baseline="redis (1 node)",
            out_dir=args.out,
        )
        for result in results:
            print(result)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(Path("results")))
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
