"""The blocks on ``blocks.core.log`` (pubsub, queue) answer a full disk with ``StorageFull``
and never hang, and every acknowledged record is there after a restart. A pubsub broker keeps
serving reads and takes writes again when space returns; a queue refuses all work (with a
``FailedPrecondition`` that names the disk) until it is restarted, by its design: its memory
ran ahead of its log.

Each server runs as a real process with its data directory on a small tmpfs (``mount``
needs root: CI runs as root; elsewhere the tests skip with the reason). A ballast file takes
part of the filesystem; deleting it is how space "returns".
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from blocks.core.errors import BlocksError, FailedPrecondition, StorageFull

FILESYSTEM_BYTES = 6 * 1024 * 1024
BALLAST_BYTES = 1024 * 1024
VALUE_BYTES = 32 * 1024
WRITES_MAX = 400  # 6 MiB / 32 KiB is ~190: the disk fills well before


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of ``FILESYSTEM_BYTES`` mounted at a fresh directory, unmounted afterwards."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", f"size={FILESYSTEM_BYTES}", "tmpfs", str(mount_point)]
    try:
        mounted = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"cannot mount a small tmpfs here: {error}")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    (mount_point / "ballast").write_bytes(b"\0" * BALLAST_BYTES)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=30)


class _Server:
    """One ``blocks <block> serve`` process on a port picked here; stderr goes to ``log``."""

    def __init__(self, block: str, data_dir: Path, log: Path) -> None:
        self.block = block
        self.data_dir = data_dir
        self.log = log
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.address = f"127.0.0.1:{probe.getsockname()[1]}"
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "blocks", self.block, "serve", "--json"]
        command += ["--listen", self.address, "--data-dir", str(self.data_dir)]
        with self.log.open("a") as log:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line and json.loads(line), (line, self.log.read_text()[-2000:])

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


def _value(index: int) -> bytes:
    return index.to_bytes(4, "big") * (VALUE_BYTES // 4)


def test_pubsub_full_disk(small_filesystem: Path, tmp_path: Path) -> None:
    from blocks.pubsub.client import connect

    server = _Server("pubsub", small_filesystem / "data", tmp_path / "broker.log")
    server.start()
    try:

        async def fill() -> list[int]:
            async with await connect([server.address], timeout_s=10.0) as client:
                await client.create_topic("events", partitions=1)
                acked: list[int] = []
                for index in range(WRITES_MAX):
                    try:
                        _, offset = await client.produce("events", _value(index), partition=0)
                    except BlocksError as error:
                        assert isinstance(error, StorageFull), repr(error)
                        break
                    assert offset == len(acked)
                    acked.append(index)
                else:
                    raise AssertionError("the disk never filled")
                records = await client.fetch("events", 0, 0, 5)
                assert [r.value for r in records] == [_value(i) for i in acked[:5]]
                (small_filesystem / "ballast").unlink()  # space returns
                _, offset = await client.produce("events", _value(len(acked)), partition=0)
                acked.append(len(acked))
                return acked

        acked = asyncio.run(fill())
        server.stop()
        server.start()

        async def read_back() -> list[bytes]:
            async with await connect([server.address], timeout_s=10.0) as client:
                values: list[bytes] = []
                while batch := await client.fetch("events", 0, len(values), 100):
                    values.extend(record.value for record in batch)
                return values

        assert asyncio.run(read_back()) == [_value(i) for i in acked]
    finally:
        server.stop()


def test_queue_full_disk(small_filesystem: Path, tmp_path: Path) -> None:
    from blocks.queue.client import connect

    server = _Server("queue", small_filesystem / "data", tmp_path / "queue.log")
    server.start()
    try:

        async def fill() -> int:
            async with await connect(server.address, timeout_s=10.0) as client:
                await client.create_queue("jobs")
                acked = 0
                for index in range(WRITES_MAX):
                    try:
                        await client.send("jobs", _value(index))
                    except BlocksError as error:
                        assert isinstance(error, StorageFull), repr(error)
                        break
                    acked += 1
                else:
                    raise AssertionError("the disk never filled")
                # The queue's memory is now ahead of its log: it refuses all work, at once and
                # saying why, until it is restarted (and rebuilt from the log).
                with pytest.raises(FailedPrecondition, match="storage full"):
                    await client.send("jobs", b"refused")
                return acked

        acked = asyncio.run(fill())
        server.stop()
        (small_filesystem / "ballast").unlink()  # space returns
        server.start()

        async def send_again() -> None:
            async with await connect(server.address, timeout_s=10.0) as client:
                await client.send("jobs", _value(acked))

        asyncio.run(send_again())
        acked += 1

        async def drain() -> list[bytes]:
            async with await connect(server.address, timeout_s=10.0) as client:
                bodies: list[bytes] = []
                while messages := await client.receive("jobs", max_messages=10):
                    bodies.extend(message.body for message in messages)
                return bodies

        assert sorted(asyncio.run(drain())) == sorted(_value(i) for i in range(acked))
    finally:
        server.stop()
