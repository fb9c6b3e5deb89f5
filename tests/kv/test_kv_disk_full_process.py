"""A kv node whose disk fills up answers with ``StorageFull``, never hangs, keeps serving reads,
resumes writing when space returns, and keeps everything it acknowledged across a restart.

The node runs as a real ``blocks kv serve`` process with its data directory on a small tmpfs
(``mount -t tmpfs -o size=...``, which needs root: CI runs as root; elsewhere the test skips
with the reason). A ballast file takes part of the filesystem; deleting it is how space
"returns".
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kv_processes import free_ports

from blocks.core.errors import BlocksError, StorageFull, Timeout
from blocks.kv.client import KVClient, connect

FILESYSTEM_BYTES = 6 * 1024 * 1024
BALLAST_BYTES = 1024 * 1024
VALUE_BYTES = 32 * 1024
WRITES_MAX = 400  # 6 MiB / 32 KiB is ~190: the disk fills well before
REQUEST_TIMEOUT_S = 10.0


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
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=30)


class _Node:
    """One single-replica ``blocks kv serve`` process whose stderr goes to ``log``."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        self.data_dir = data_dir
        self.log = log
        self.port = free_ports(1)[0]
        self.process: subprocess.Popen[str] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [
            sys.executable, "-m", "blocks", "kv", "serve", "--node-id", "n1",
            "--listen", self.address, "--data-dir", str(self.data_dir), "--json",
            "--replicas", "1", "--read-quorum", "1", "--write-quorum", "1",
        ]  # fmt: skip
        with self.log.open("a") as log:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line and json.loads(line)["node"] == "n1", (line, self.log.read_text()[-2000:])

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


async def _fill(client: KVClient) -> tuple[list[bytes], BaseException]:
    """Write until the first failure; return the acknowledged keys and that failure."""
    acked: list[bytes] = []
    for index in range(WRITES_MAX):
        key = f"key-{index:05d}".encode()
        try:
            await client.put(key, _value(index))
        except BlocksError as error:
            return acked, error
        acked.append(key)
    raise AssertionError(f"{WRITES_MAX} writes of {VALUE_BYTES} bytes fit a full disk")


def test_full_disk_gives_a_clear_error_keeps_reads_and_recovers(
    small_filesystem: Path, tmp_path: Path
) -> None:
    ballast = small_filesystem / "ballast"
    ballast.write_bytes(b"\0" * BALLAST_BYTES)
    node = _Node(small_filesystem / "n1", tmp_path / "n1.log")
    node.start()
    try:

        async def while_full() -> tuple[list[bytes], BaseException, list[BaseException]]:
            client = await connect(node.address, timeout_s=REQUEST_TIMEOUT_S)
            async with client:
                acked, first_error = await _fill(client)
                assert not isinstance(first_error, Timeout), "a full disk must not hang a write"
                more: list[BaseException] = []
                for index in range(3):  # still full: each write fails, with the same error
                    try:
                        await client.put(f"again-{index}".encode(), _value(index))
                    except BlocksError as error:
                        more.append(error)
                statuses = await client.status()
                assert [s.get("storage") for s in statuses] == ["full"], statuses
                for key in [acked[0], acked[len(acked) // 2], acked[-1]]:
                    read = await client.get(key)
                    assert read.value == _value(int(key[4:])), key
                return acked, first_error, more

        acked, first_error, more = asyncio.run(while_full())
        assert isinstance(first_error, StorageFull), repr(first_error)
        assert len(more) == 3 and all(isinstance(e, StorageFull) for e in more), more
        assert len(acked) > 10
        log = node.log.read_text()
        assert "Traceback" not in log, log[-3000:]
        assert log.lower().count("storage full") == 1, log[-3000:]

        ballast.unlink()  # space returns

        async def after_space_returns() -> None:
            async with await connect(node.address, timeout_s=REQUEST_TIMEOUT_S) as client:
                await client.put(b"after", b"space returned")
                assert (await client.get(b"after")).value == b"space returned"

        asyncio.run(after_space_returns())
        assert "writable again" in node.log.read_text().lower()
        node.stop()
        node.start()

        async def after_restart() -> None:
            async with await connect(node.address, timeout_s=REQUEST_TIMEOUT_S) as client:
                for key in acked:
                    read = await client.get(key)
                    assert read.value == _value(int(key[4:])), f"acknowledged {key!r} lost"
                assert (await client.get(b"after")).value == b"space returned"

        asyncio.run(after_restart())
    finally:
        node.stop()
