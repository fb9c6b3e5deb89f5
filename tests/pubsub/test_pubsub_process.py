"""A broker process: acknowledged produces, kill -9 mid-stream, restart, read from the start:
every acknowledged record is there, in order per partition."""

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
from blocks.pubsub import ProducerConfig
from blocks.pubsub.client import connect

ENV = {**os.environ, "PYTHONPATH": "src"}
# Still 8 attempts per batch, but backoffs capped at 0.2 s instead of 1 s: once the broker is
# killed, the workers' produces give up in about 2 s instead of 7 s. Nothing sent after the
# kill can be acknowledged, so the check below covers the same records.
PRODUCER = ProducerConfig(backoff_max_s=0.2)


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
            "pubsub",
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
    assert json.loads(process.stdout.readline())["address"].endswith(str(port))
    return process


def test_kill_restart_and_consume_from_start(tmp_path: Path) -> None:
    port, data_dir = _free_port(), tmp_path / "data"
    address = f"127.0.0.1:{port}"
    server = _start(port, data_dir)
    acked: dict[int, list[tuple[int, bytes]]] = {0: [], 1: [], 2: []}
    try:

        async def produce() -> None:
            # After the kill each worker's produce retries until the client's timeout: 4 s,
            # not the default 10, bounds that wait (a produce before it takes milliseconds).
            async with await connect([address], producer=PRODUCER, timeout_s=4.0) as client:
                await client.create_topic("events", partitions=3)

                async def worker(w: int) -> None:
                    for i in range(100_000):
                        value = f"{w}-{i}".encode()
                        partition, offset = await client.produce("events", value, key=value)
                        acked[partition].append((offset, value))

                tasks = [asyncio.ensure_future(worker(w)) for w in range(6)]
                # Kill once 51 sends are acknowledged, with the workers' next ones in flight (a
                # fixed second before it only made more records to drain afterwards).
                for _ in range(1200):  # up to 60 s: a loaded machine may need it for 51 acks
                    if sum(len(v) for v in acked.values()) > 50:
                        break
                    await asyncio.sleep(0.05)
                server.send_signal(signal.SIGKILL)
                await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run(produce())
    finally:
        server.kill()
        server.wait(timeout=10)
    assert sum(len(v) for v in acked.values()) > 50

    server = _start(port, data_dir)
    try:
        # The CLI in this process against the real server (a subprocess only added seconds
        # of imports).
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(
                ["pubsub", "consume", "events", "--address", address, "--max", "5", "--json"]
            )
        assert code == 0, out.getvalue()
        assert len(json.loads(out.getvalue())) == 5

        async def read_all() -> dict[int, list[tuple[int, bytes]]]:
            out: dict[int, list[tuple[int, bytes]]] = {}
            async with await connect([address]) as client:
                for partition in range(3):
                    rows: list[tuple[int, bytes]] = []
                    while batch := await client.fetch("events", partition, len(rows), 1000):
                        rows.extend((r.offset, r.value) for r in batch)
                    out[partition] = rows
            return out

        stored = asyncio.run(read_all())
    finally:
        server.terminate()
        server.wait(timeout=10)
    for partition, rows in stored.items():
        assert [o for o, _ in rows] == list(range(len(rows))), "offsets must be dense, in order"
        present = dict(rows)
        for offset, value in acked[partition]:
            assert present.get(offset) == value, f"acknowledged {value!r} lost"
