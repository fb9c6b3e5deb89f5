"""A queue server process: sends acknowledged, kill -9 mid-stream, restart, nothing lost."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from blocks.cli import main
from blocks.queue.client import connect

ENV = {**os.environ, "PYTHONPATH": "src"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(port: int, data_dir: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "blocks",
            "queue",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--data-dir",
            str(data_dir),
            "--json",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert json.loads(line)["address"].endswith(str(port)), line
    return process


def _cli(*args: str) -> object:
    """``blocks queue ARGS --json`` in this process (the server is the real process; a
    client subprocess only added seconds of imports per call)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["queue", *args, "--json"])
    assert code == 0, out.getvalue()
    return json.loads(out.getvalue())


def test_kill_and_restart_server_loses_no_acknowledged_send(tmp_path: Path) -> None:
    port, data_dir = _free_port(), tmp_path / "data"
    address = f"127.0.0.1:{port}"
    server = _start(port, data_dir)
    acknowledged: list[bytes] = []
    try:
        _cli("create", "jobs", "--address", address)
        assert isinstance(_cli("send", "jobs", "via-cli", "--address", address), str)
        acknowledged.append(b"via-cli")

        async def produce() -> None:
            # After the kill each worker's send retries until the client's timeout: 4 s, not
            # the default 10, bounds that wait (a send before the kill takes milliseconds).
            async with await connect([address], timeout_s=4.0) as client:

                async def worker(w: int) -> None:
                    for i in range(10_000):
                        body = f"{w}-{i}".encode()
                        await client.send("jobs", body)
                        acknowledged.append(body)

                tasks = [asyncio.ensure_future(worker(w)) for w in range(8)]
                # Kill once 51 sends are acknowledged, with the workers' next ones in flight (a
                # fixed second before it only made more records to drain afterwards).
                for _ in range(1200):  # up to 60 s: a loaded machine may need it for 51 acks
                    if len(acknowledged) > 50:
                        break
                    await asyncio.sleep(0.05)
                server.send_signal(signal.SIGKILL)  # mid-stream
                await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run(produce())
    finally:
        server.kill()
        server.wait(timeout=10)
    assert len(acknowledged) > 50

    server = _start(port, data_dir)
    try:
        received = _cli("receive", "jobs", "--max", "100", "--ack", "--address", address)
        assert isinstance(received, list) and received

        async def drain() -> list[bytes]:
            bodies = [m["body"].encode() for m in received]  # type: ignore[index]
            async with await connect([address]) as client:
                while batch := await client.receive("jobs", max_messages=100):
                    bodies.extend(m.body for m in batch)
            return bodies

        bodies = asyncio.run(drain())
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert len(bodies) == len(set(bodies))
    assert not set(acknowledged) - set(bodies), "an acknowledged send was lost"
