"""The blocks on ``blocks.core.log`` (pubsub, queue) answer a full disk with ``StorageFull``
and never hang, and every acknowledged record is there after a restart. Both keep serving
and take writes again when space returns: a pubsub broker keeps serving reads; a queue
rebuilds its broker from its log after each refused write (its memory had run ahead of the
log) and refuses only the writes the disk refused, where it used to refuse all work, reads
included, until it was restarted.

Each server runs as a real process with its data directory on a small tmpfs (``mount``
needs root: CI runs as root; elsewhere the tests skip with the reason). A ballast file takes
part of the filesystem; deleting it is how space "returns". A spare file smaller than one
value gives back room for small records (a queue's receives and acks) but not for a value.
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

from blocks.core.errors import BlocksError, StorageFull

FILESYSTEM_BYTES = 6 * 1024 * 1024
BALLAST_BYTES = 1024 * 1024
VALUE_BYTES = 32 * 1024
SPARE_BYTES = VALUE_BYTES // 2
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
    (mount_point / "spare").write_bytes(b"\0" * SPARE_BYTES)
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

        async def fill() -> tuple[list[bytes], list[bytes]]:
            async with await connect(server.address, timeout_s=10.0) as client:
                await client.create_queue("jobs")
                sent: list[bytes] = []
                for index in range(WRITES_MAX):
                    try:
                        await client.send("jobs", _value(index))
                    except BlocksError as error:
                        assert isinstance(error, StorageFull), repr(error)
                        break
                    sent.append(_value(index))
                else:
                    raise AssertionError("the disk never filled")
                # Only the refused write failed: the next one is refused for the same reason,
                # not because the queue stopped working (it used to refuse all work here).
                with pytest.raises(StorageFull):
                    await client.send("jobs", _value(WRITES_MAX))
                (small_filesystem / "spare").unlink()  # room for small records only
                acked: list[bytes] = []
                messages = await client.receive("jobs", max_messages=5)
                assert len(messages) == 5 and all(m.body in sent for m in messages), messages
                for message in messages:
                    await client.ack("jobs", message.receipt)
                    acked.append(message.body)
                (small_filesystem / "ballast").unlink()  # space returns: writes resume
                for index in range(WRITES_MAX + 1, WRITES_MAX + 4):
                    await client.send("jobs", _value(index))
                    sent.append(_value(index))
                return sent, acked

        sent, acked = asyncio.run(fill())
        server.stop()
        server.start()

        async def drain() -> list[bytes]:
            async with await connect(server.address, timeout_s=10.0) as client:
                bodies: list[bytes] = []
                while messages := await client.receive("jobs", max_messages=10):
                    bodies.extend(message.body for message in messages)
                return bodies

        remaining = asyncio.run(drain())
        assert sorted(remaining) == sorted(set(sent) - set(acked)), "lost or redelivered"
        assert len(remaining) == len(sent) - len(acked)
    finally:
        server.stop()
