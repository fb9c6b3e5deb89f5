"""Strangers cannot make a kv node hold memory: connections that never authenticate and each
send the start of a 16 MiB frame are cut after a few KiB, so the node's peak resident memory
(``VmHWM``) barely moves. Before the handshake limit, 20 such connections took a node from
75 MB to 400 MB."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from kv_processes import free_ports

from blocks.kv.client import connect

CONNECTIONS = 20
DECLARED_FRAME_BYTES = 16 * 1024 * 1024
SENT_PER_CONNECTION_BYTES = 8 * 1024 * 1024
CHUNK_BYTES = 256 * 1024
GROWTH_MAX_BYTES = 40 * 1024 * 1024  # 20 x 8 MiB = 160 MiB if the node buffered what it got


def _memory_bytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for process {pid}")


def _send_what_it_takes(sockets: list[socket.socket]) -> int:
    """Send each socket its share in rounds; a socket the node closed stops taking bytes."""
    header = DECLARED_FRAME_BYTES.to_bytes(4, "big")
    chunk = b"\x91" * CHUNK_BYTES
    open_sockets = list(sockets)
    for sock in open_sockets:
        sock.sendall(header)
    sent = 0
    for _ in range(SENT_PER_CONNECTION_BYTES // CHUNK_BYTES):
        for sock in list(open_sockets):
            try:
                sock.sendall(chunk)
                sent += len(chunk)
            except OSError:  # the node hung up: what we want
                open_sockets.remove(sock)
    return sent


def test_partial_frames_before_auth_do_not_grow_the_node(tmp_path: Path) -> None:
    port = free_ports(1)[0]
    token_file = tmp_path / "token"
    token_file.write_text("secret-token")
    command = [
        sys.executable, "-m", "blocks", "kv", "serve", "--node-id", "n1",
        "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "n1"), "--json",
        "--replicas", "1", "--read-quorum", "1", "--write-quorum", "1",
        "--token-file", str(token_file),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    sockets: list[socket.socket] = []
    try:
        assert process.stdout is not None
        assert json.loads(process.stdout.readline())["node"] == "n1"
        time.sleep(0.5)  # let start-up allocations settle before the baseline
        baseline = _memory_bytes(process.pid, "VmHWM")
        for _ in range(CONNECTIONS):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sockets.append(sock)
        _send_what_it_takes(sockets)
        peak = _memory_bytes(process.pid, "VmHWM")
        for _ in range(20):  # until the node has read what the sockets still held
            time.sleep(0.1)
            peak, before = _memory_bytes(process.pid, "VmHWM"), peak
            if peak == before:
                break
        assert process.poll() is None, "the node must survive"
        assert peak - baseline < GROWTH_MAX_BYTES, (baseline, peak)

        async def breaches() -> dict[str, int]:
            address = f"127.0.0.1:{port}"
            async with await connect(address, token="secret-token", timeout_s=20) as client:
                [status] = await client.status()
                transport: dict[str, int] = status["transport"]
                return transport

        counted = asyncio.run(breaches())
        assert counted["frames_too_large_before_handshake"] == CONNECTIONS, counted
    finally:
        for sock in sockets:
            sock.close()
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
