"""Cache nodes over gRPC: the CLI against a server process, and a cluster losing a node."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from blocks.cache.client import CacheClient
from blocks.cache.cluster import ClusterClient
from blocks.cache.dataclient import DataNode
from blocks.cache.gossip import LEAVE_DRAIN_S
from blocks.cache.service import build_server
from blocks.cli import main as blocks_main
from blocks.core.clock import ManualClock
from blocks.core.codec import pack
from blocks.core.errors import InvalidArgument
from blocks.testing.ports import free_ports

BLOCKS = [sys.executable, "-m", "blocks", "cache"]


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    """One verb through ``blocks.cli.main`` in this process: the same parsing, client and
    printing as ``blocks cache ...`` without a Python start-up per verb (about a second each
    on a loaded machine); the exit code across a real process is checked below."""
    code = blocks_main(["cache", *args, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


async def _data_path_get(address: str, key: str) -> bytes | None:
    node = DataNode("cache", address)  # a node without --name serves its data path as "cache"
    try:
        return await node.get(key)
    finally:
        await node.close()


@pytest.mark.process
def test_cache_node_through_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    server = subprocess.Popen(
        [
            *BLOCKS,
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--capacity",
            "2",
            "--policy",
            "lru",
            "--json",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        announced = json.loads(server.stdout.readline())
        address = announced["address"]
        assert cli(capsys, "get", "a", "--address", address) is None
        assert cli(capsys, "put", "a", "apple", "--address", address) is True
        assert cli(capsys, "get", "a", "--address", address) == "apple"
        cli(capsys, "put", "b", "banana", "--address", address)
        cli(capsys, "put", "c", "cherry", "--address", address)  # capacity 2, LRU: evicts a
        assert cli(capsys, "get", "a", "--address", address) is None
        assert cli(capsys, "delete", "c", "--address", address) is True
        stats = cli(capsys, "stats", "--address", address)
        assert stats["evictions"] == 1 and stats["hits"] == 1 and stats["capacity"] == 2
        assert asyncio.run(_data_path_get(announced["data_address"], "b")) == pack("banana")
        bad = subprocess.run(
            [*BLOCKS, "get", "x" * 300, "--address", address],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert bad.returncode == 2 and "key longer than" in bad.stderr  # InvalidArgument
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            assert server.wait(timeout=20) == 0
        finally:
            if server.poll() is None:
                server.kill()


def test_grpc_cluster_survives_a_stopped_node() -> None:
    async def main() -> None:
        servers = [build_server(capacity=1000)[0] for _ in range(3)]
        for server in servers:
            await server.start()
        clients = {server.address: CacheClient(server.address, timeout_s=2.0) for server in servers}
        try:
            cluster = ClusterClient(clients, down_for_s=60.0)
            keys = [f"k{i}" for i in range(60)]
            for key in keys:
                await cluster.put(key, [key, 1])
            assert all([await cluster.get(key) == [key, 1] for key in keys])
            victim = servers[1]
            lost = {key for key in keys if cluster.owner(key) == victim.address}
            await victim.stop(grace_s=0.5)
            values = {key: await cluster.get(key) for key in keys}
            assert {key for key, value in values.items() if value is None} == lost
            assert victim.address not in cluster.live_nodes
        finally:
            for client in clients.values():
                await client.close()
            for server in servers:
                await server.stop(grace_s=0.5)

    asyncio.run(asyncio.wait_for(main(), 60))


def test_node_ttl_weights_and_bad_input() -> None:
    async def main() -> None:
        clock = ManualClock(monotonic_s=0.0)
        server, service = build_server(capacity=100, by_bytes=True, clock=clock, policy="lru")
        await server.start()
        try:
            async with CacheClient(server.address) as node:
                await node.put("short", b"x" * 10, ttl=5)
                await node.put("long", b"y" * 60)
                assert await node.get("short") == b"x" * 10
                clock.advance(5)
                assert await node.get("short") is None
                stats = await node.stats()
                assert stats.expirations == 1 and stats.weight == len("long") + 60
                await node.put("big", b"z" * 60)  # 63 + 64 bytes > 100: evicts "long"
                assert await node.get("long") is None and await node.get("big") == b"z" * 60
                with pytest.raises(InvalidArgument):
                    await node.put("", b"v")
                with pytest.raises(InvalidArgument):
                    await node.put("k", b"v" * (1024 * 1024 + 1))
                with pytest.raises(InvalidArgument):
                    await node.put("k", b"v", ttl=-1)
                with pytest.raises(InvalidArgument):
                    await node.put("k", b"v" * 200)  # heavier than the whole node
                assert await node.delete("big") is True and await node.delete("big") is False
            assert service.cache.stats().size == 0
        finally:
            await server.stop(grace_s=0.5)
        with pytest.raises(InvalidArgument):
            build_server(policy="fifo")

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_cluster_node_leaves_with_the_drain_it_was_built_with() -> None:
    """``build_server(leave_drain_s=...)`` is the wait after a node announces its leave: the
    default keeps ``LEAVE_DRAIN_S``, and 0 lets a stop that nobody watches skip it."""

    async def main() -> None:
        ports = free_ports(2)
        _, kept_service = build_server(name="kept", port=ports[0])
        assert kept_service.gossip is not None
        assert kept_service.gossip.leave_drain_s == LEAVE_DRAIN_S
        server, service = build_server(name="quick", port=ports[1], leave_drain_s=0.0)
        assert service.gossip is not None and service.gossip.leave_drain_s == 0.0
        await server.start()
        started = time.monotonic()
        await server.stop(grace_s=0.2)
        stopped_s = time.monotonic() - started
        # the drain is a sleep of LEAVE_DRAIN_S: a stop shorter than that skipped it
        assert stopped_s < LEAVE_DRAIN_S, f"the stop took {stopped_s:.2f} s"
        with pytest.raises(InvalidArgument):
            build_server(name="bad", port=ports[1], leave_drain_s=-1.0)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_demo_runs() -> None:
    from blocks.cache.demo import demo

    lines: list[str] = []
    asyncio.run(asyncio.wait_for(demo(lines.append), 60))
    text = "\n".join(lines)
    assert "100 concurrent reads of a cold key -> 1 load" in text
    assert "0 errors" in text and "optimal" in text
