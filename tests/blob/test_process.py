"""Real processes: a three-node cluster over the shard protocol (each node lists the other two
as peers; metadata replicated, a cluster's default), the CLI, a node killed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from blocks.blob.client import S3Client, S3ClientError

pytestmark = pytest.mark.process
ACCESS, SECRET, TOKEN = "AKIDPROC", "proc-secret", "cluster-token"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _launch(data_dir: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    """A ``blocks blob serve`` process, not yet waited for (``_serving``)."""
    command = [
        sys.executable,
        "-m",
        "blocks",
        "blob",
        "serve",
        "--data-dir",
        str(data_dir),
        "--listen",
        f"127.0.0.1:{port}",
        "--cluster-token",
        TOKEN,
        "--no-fsync",
        *extra,
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _serving(process: subprocess.Popen[str]) -> subprocess.Popen[str]:
    """``process`` once its first line says it serves (fails with that line otherwise)."""
    assert process.stdout is not None
    line = process.stdout.readline()
    assert "serving S3" in line, line
    return process


def _start(data_dir: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    return _serving(_launch(data_dir, port, *extra))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[list[str], list[subprocess.Popen[str]]]]:
    """peer0, peer1 and the front: their endpoints and processes."""
    processes: list[subprocess.Popen[str]] = []
    try:
        ports = [_free_port() for _ in range(3)]  # peer0, peer1, then the front
        for n, port in enumerate(ports):
            peers = [a for p in ports if p != port for a in ("--peer", f"http://127.0.0.1:{p}")]
            name = "front" if n == 2 else f"peer{n}"
            options = ["--codec", "rs:2+1", "--chunk-kib", "64", *peers]
            processes.append(
                _launch(
                    tmp_path / name, port, *options, "--access-key", ACCESS, "--secret-key", SECRET
                )
            )
        for process in processes:  # launched together: their starts overlap
            _serving(process)
        yield [f"http://127.0.0.1:{port}" for port in ports], processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def test_cluster_survives_a_killed_peer_and_the_cli_works(
    cluster: tuple[list[str], list[subprocess.Popen[str]]], tmp_path: Path
) -> None:
    endpoints, processes = cluster
    endpoint = endpoints[2]  # the front
    client = S3Client(endpoint, ACCESS, SECRET)
    client.create_bucket("media")
    data = os.urandom(300 * 1024)
    client.put_object("media", "clip.bin", data)
    assert client.get_object("media", "clip.bin") == data
    # Every node holds one shard of every chunk (2+1 over 3 nodes), in the cluster's namespace.
    for name in ("peer0", "peer1", "front"):
        shard_files = list((tmp_path / name / "shards" / "peers").glob("*/??/??/*.*"))
        assert len(shard_files) == 5, name  # 300 KiB in 64 KiB chunks

    processes[0].kill()
    processes[0].wait(timeout=10)
    assert client.get_object("media", "clip.bin") == data  # decoded from the two left
    other = S3Client(endpoints[1], ACCESS, SECRET)
    assert other.get_object("media", "clip.bin") == data  # any node serves any object
    other.close()
    assert client.get_object("media", "clip.bin", "bytes=70000-70009") == data[70000:70010]
    with pytest.raises(S3ClientError) as error:
        client.put_object("media", "new.bin", b"x" * 1000)  # cannot place all shards
    assert error.value.status == 503

    source = tmp_path / "upload.txt"
    source.write_bytes(b"from the command line")
    base = [sys.executable, "-m", "blocks", "blob"]
    auth = ["--endpoint", endpoint, "--access-key", ACCESS, "--secret-key", SECRET, "--json"]
    listed = subprocess.run(
        [*base, "ls", "media", *auth], capture_output=True, text=True, timeout=30, check=True
    )
    assert json.loads(listed.stdout) == [{"key": "clip.bin", "size": len(data)}]
    wrong = subprocess.run(
        [*base, "ls", *auth[:-2], "wrong", "--json"], capture_output=True, text=True, timeout=30
    )
    assert wrong.returncode != 0 and "SignatureDoesNotMatch" in wrong.stderr


def test_sigterm_stops_a_node_cleanly(tmp_path: Path) -> None:
    process = _start(tmp_path / "solo", _free_port())
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=15)
    assert process.returncode == 0 and "stopped" in output


def test_a_per_node_data_directory_joins_a_cluster_only_with_the_flag(tmp_path: Path) -> None:
    """Replicated metadata is a cluster's default: a directory written by a single node (per-
    node metadata) is refused with a message naming the flag that keeps its mode, and served
    with it."""
    port, peer = _free_port(), f"http://127.0.0.1:{_free_port()}"
    solo = _start(tmp_path / "old", port)
    solo.send_signal(signal.SIGTERM)
    solo.communicate(timeout=15)
    command = [sys.executable, "-m", "blocks", "blob", "serve", "--data-dir", str(tmp_path / "old")]
    command += ["--listen", f"127.0.0.1:{port}", "--cluster-token", TOKEN, "--peer", peer]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "--no-replicate-metadata" in refused.stdout + refused.stderr
    kept = _start(tmp_path / "old", port, "--peer", peer, "--no-replicate-metadata")
    kept.send_signal(signal.SIGTERM)
    kept.communicate(timeout=15)
    assert kept.returncode == 0
