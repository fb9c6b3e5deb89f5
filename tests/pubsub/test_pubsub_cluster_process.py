"""Three broker processes replicate each partition; the leader of partition 0 is killed with
SIGKILL under acks=all load. A follower takes over, producing goes on, and every
acknowledged record is there afterwards, at its offset, once. A produce that fails does so
only around the kill, and with the library's retryable errors (the broker is gone, or the
request timed out), never with anything else."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from blocks.core.errors import BlocksError
from blocks.pubsub.client import connect
from blocks.pubsub.replication import replica_set

ENV = {**os.environ, "PYTHONPATH": "src"}
NODES = ["b1", "b2", "b3"]


def _free_ports(count: int) -> list[int]:
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def _start(node: str, grpc_port: int, cluster: dict[str, int], root: Path) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "blocks", "pubsub", "serve", "--json", "--node-id", node]
    argv += ["--listen", f"127.0.0.1:{grpc_port}", "--data-dir", str(root / node)]
    argv += ["--cluster-listen", f"127.0.0.1:{cluster[node]}"]
    for peer, port in cluster.items():
        if peer != node:
            argv += ["--peer", f"{peer}=127.0.0.1:{port}"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=ENV)


def _wait_started(node: str, process: subprocess.Popen[str]) -> None:
    """Block until ``process`` printed its start line (it is serving)."""
    assert process.stdout is not None
    assert json.loads(process.stdout.readline())["node"] == node


async def _until(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """Poll ``condition`` until it holds or ``timeout_s`` passes (the asserts say which)."""
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def test_kill_the_leader_and_lose_nothing_acknowledged(tmp_path: Path) -> None:
    ports = _free_ports(6)
    grpc_ports = dict(zip(NODES, ports[:3], strict=True))
    cluster = dict(zip(NODES, ports[3:], strict=True))
    # All three start at once (each spends its first seconds importing), then are waited for.
    processes = {n: _start(n, grpc_ports[n], cluster, tmp_path) for n in NODES}
    for node, process in processes.items():
        _wait_started(node, process)
    victim = replica_set("events", 0, NODES, 3)[0]  # partition 0's first leader
    addresses = [f"127.0.0.1:{grpc_ports[n]}" for n in [victim, *(n for n in NODES if n != victim)]]
    acked: dict[int, list[tuple[int, bytes, float]]] = {0: [], 1: [], 2: []}
    failures: list[tuple[float, BaseException]] = []  # (when, what) of each failed produce
    try:

        async def produce() -> float:
            async with await connect(addresses, timeout_s=5.0) as client:
                await client.create_topic("events", partitions=3)
                stop = time.monotonic() + 300.0  # moved up once the scenario has played out

                async def worker(w: int) -> None:
                    for i in range(100_000):
                        if time.monotonic() > stop:
                            return
                        value = f"{w}-{i}".encode()
                        try:
                            partition, offset = await client.produce("events", value, key=value)
                        except Exception as error:
                            failures.append((time.monotonic(), error))
                            continue
                        acked[partition].append((offset, value, time.monotonic()))

                tasks = [asyncio.ensure_future(worker(w)) for w in range(6)]
                # Conditions, not fixed sleeps: under load the brokers could ack too little
                # before the kill, or fail over after the end; on a quiet machine fixed sleeps
                # only made more records to read back.
                await _until(lambda: len(acked[0]) > 50)
                processes[victim].send_signal(signal.SIGKILL)
                killed_at = time.monotonic()
                await _until(lambda: sum(a[2] > killed_at + 0.5 for a in acked[0]) > 50)
                stop = time.monotonic()
                await asyncio.gather(*tasks)
                return killed_at

        killed_at = asyncio.run(produce())
        processes[victim].wait(timeout=10)

        async def read_all() -> dict[int, list[tuple[int, bytes]]]:
            out: dict[int, list[tuple[int, bytes]]] = {}
            survivors = [a for a in addresses[1:]]
            async with await connect(survivors, timeout_s=5.0) as client:
                for partition in range(3):
                    rows: list[tuple[int, bytes]] = []
                    offset = 0
                    while batch := await client.fetch("events", partition, offset, 1000):
                        rows.extend((r.offset, r.value) for r in batch)
                        offset = batch[-1].offset + 1
                    out[partition] = rows
            return out

        stored = asyncio.run(read_all())
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
    assert sum(len(v) for v in acked.values()) > 50
    unexpected = [e for _, e in failures if not (isinstance(e, BlocksError) and e.retryable)]
    assert not unexpected, f"produce failed with a non-retryable error: {unexpected[:3]!r}"
    early = [e for when, e in failures if when < killed_at]
    assert not early, f"produce failed before any fault: {early[:3]!r}"
    after_kill = [a for a in acked[0] if a[2] > killed_at + 0.5]
    assert after_kill, "partition 0 should have a new leader taking produces"
    values = [value for rows in stored.values() for _, value in rows]
    assert len(values) == len(set(values)), "a record was stored twice"
    for partition, rows in stored.items():
        offsets = [o for o, _ in rows]
        assert offsets == sorted(set(offsets)), "offsets must increase"
        present = dict(rows)
        for offset, value, _ in acked[partition]:
            assert present.get(offset) == value, f"acknowledged {value!r} lost"
