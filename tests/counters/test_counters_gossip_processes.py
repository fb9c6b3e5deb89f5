"""Three counters server processes gossiping over TCP converge on the acknowledged sum."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

import pytest

from blocks.counters.client import CountersClient
from blocks.testing.process import free_ports


@pytest.mark.process
def test_three_processes_converge() -> None:
    names = ["n0", "n1", "n2"]
    gossip_ports = dict(zip(names, free_ports(3), strict=True))
    processes = []
    addresses = {}
    try:
        for name in names:
            peers = [f"--peer={p}=127.0.0.1:{gossip_ports[p]}" for p in names if p != name]
            command = [
                sys.executable,
                "-m",
                "blocks",
                "counters",
                "serve",
                "--name",
                name,
                "--listen",
                "127.0.0.1:0",
            ]
            command += ["--gossip-port", str(gossip_ports[name]), *peers, "--json"]
            processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
        # All three start at once (each takes a second or more to import and bind on a loaded
        # machine); each announces its address when it is up.
        for name, process in zip(names, processes, strict=True):
            assert process.stdout is not None
            addresses[name] = json.loads(process.stdout.readline())["address"]

        async def drive() -> list[int]:
            clients = [CountersClient(addresses[name]) for name in names]
            total = 0
            for k in range(60):
                amount = k % 7 - 2
                await clients[k % 3].increment("likes", amount)
                total += amount
            deadline = time.monotonic() + 60  # generous: only a failing run waits it out
            values: list[int] = []
            while time.monotonic() < deadline:
                values = [await client.value("likes") for client in clients]
                if values == [total] * 3:
                    break
                await asyncio.sleep(0.1)
            for client in clients:
                await client.close()
            return [total, *values]

        total, *values = asyncio.run(drive())
        assert values == [total] * 3
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                assert process.wait(timeout=20) == 0
            finally:
                if process.poll() is None:
                    process.kill()
