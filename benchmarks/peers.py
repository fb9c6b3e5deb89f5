"""Peer servers for benchmarks: find, start on a free 127.0.0.1 port, stop.

Benchmarks start their peers (nats-server, redis-server) as child processes with throw-away
data directories. A peer that is not installed raises ``Skip`` with the command that installs
it, so the harness reports it as skipped instead of failing.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

from benchmarks.harness import Skip

__all__ = [
    "PeerServer",
    "free_port",
    "start_nats_server",
    "start_process",
    "start_redis_server",
    "stop_process",
    "wait_port",
]


@dataclass(frozen=True, slots=True)
class PeerServer:
    process: subprocess.Popen[bytes]
    directory: str
    port: int

    def stop(self) -> None:
        stop_process(self.process, self.directory)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise Skip(f"server on port {port} did not start")


def start_process(argv: list[str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
    except Skip:
        process.kill()
        raise
    return process


def stop_process(process: subprocess.Popen[bytes], directory: str) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    shutil.rmtree(directory, ignore_errors=True)


def _server(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise Skip(f"{binary} is not installed (apt-get install {package})")
    return path


def start_nats_server() -> PeerServer:
    """nats-server with JetStream on file storage in a fresh directory."""
    binary = _server("nats-server", "nats-server")
    port, directory = free_port(), tempfile.mkdtemp(prefix="bench-nats-")
    process = start_process([binary, "-js", "-p", str(port), "-sd", directory], port)
    return PeerServer(process, directory, port)


def start_redis_server() -> PeerServer:
    """redis-server with an append-only file synced every second, no RDB snapshots."""
    binary = _server("redis-server", "redis-server")
    port, directory = free_port(), tempfile.mkdtemp(prefix="bench-redis-")
    argv = [binary, "--port", str(port), "--dir", directory]
    argv += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
    return PeerServer(start_process(argv, port), directory, port)
