"""A small helper for blob process tests: real ``blocks blob serve`` nodes that can be killed
and restarted on the same port and data directory (until the public kit in
``blocks.testing`` offers the same)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from blocks.testing.process import free_ports

ACCESS, SECRET, TOKEN = "AKIDPROC", "proc-secret", "cluster-token"
START_TIMEOUT_S = 60.0


def boto3_client(endpoint: str, access: str = ACCESS, secret: str = SECRET) -> Any:
    """A boto3 S3 client for ``endpoint``: path-style addressing and one attempt per call,
    so a failed request shows instead of being retried away."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def free_port() -> int:
    return free_ports(1)[0]


class Node:
    """One ``blocks blob serve`` process; ``start`` may be called again after a stop."""

    def __init__(
        self,
        data_dir: Path,
        port: int,
        extra: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port
        self.extra = list(extra)
        self.env = {**os.environ, **env} if env is not None else None
        """The process's environment (this one's, with ``env`` on top), e.g. a PYTHONPATH."""
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self._ready = threading.Event()
        """Set when the launched process serves or ends."""
        self._serving = threading.Event()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the process and wait until it serves (see ``launch``, ``wait_serving``)."""
        self.launch()
        self.wait_serving()

    def launch(self) -> None:
        """Start the process without waiting for it: several nodes launched one after
        another then waited for start together (``start_all``), their imports overlapping."""
        command = [
            sys.executable,
            "-m",
            "blocks",
            "blob",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            f"127.0.0.1:{self.port}",
            "--cluster-token",
            TOKEN,
            "--access-key",
            ACCESS,
            "--secret-key",
            SECRET,
            *self.extra,
        ]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env
        )
        self.process = process
        assert process.stdout is not None
        self._ready = ready = threading.Event()
        self._serving = serving = threading.Event()

        def drain() -> None:  # keep reading so the pipe never fills and blocks the node
            assert process.stdout is not None
            for line in process.stdout:
                self.output.append(line)
                if "serving S3" in line:
                    serving.set()
                    ready.set()
            ready.set()  # the process ended

        threading.Thread(target=drain, daemon=True).start()

    def wait_serving(self) -> None:
        """Wait (``START_TIMEOUT_S`` at most) until the launched process serves; fail with
        its output if it ended or did not serve in time."""
        assert self.process is not None, "launch() first"
        self._ready.wait(START_TIMEOUT_S)
        assert self._serving.is_set() and self.process.poll() is None, "".join(self.output)

    def stop(self, how: signal.Signals = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(how)
        code = self.process.wait(timeout=30)
        self.process = None
        return code

    def shard_files(self) -> list[Path]:
        return [p for p in (self.data_dir / "shards").rglob("*.*") if p.name[0] != "."]


def cluster_nodes(
    root: Path, count: int, extra: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> list[Node]:
    """``count`` nodes, each listing every other one as a peer (not started)."""
    ports = [free_port() for _ in range(count)]
    nodes = []
    for n, port in enumerate(ports):
        peers = [a for p in ports if p != port for a in ("--peer", f"http://127.0.0.1:{p}")]
        nodes.append(Node(root / f"node{n}", port, [*extra, *peers], env))
    return nodes


def tcp_cluster_nodes(
    root: Path, count: int, extra: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> list[Node]:
    """``count`` nodes whose peer traffic rides a ``TcpTransport`` (``--peer-listen``),
    each naming every other one by its ``tcp://`` address (not started)."""
    ports = free_ports(2 * count)
    s3_ports, peer_ports = ports[:count], ports[count:]
    nodes = []
    for n in range(count):
        peers = [
            arg
            for other in range(count)
            if other != n
            for arg in ("--peer", f"tcp://127.0.0.1:{peer_ports[other]}")
        ]
        listen = ["--peer-listen", f"127.0.0.1:{peer_ports[n]}"]
        nodes.append(Node(root / f"node{n}", s3_ports[n], [*extra, *listen, *peers], env))
    return nodes


def start_all(nodes: Sequence[Node]) -> None:
    """Launch every node, then wait for each to serve: the nodes' starts (seconds of
    imports each on a loaded machine) overlap instead of adding up. A node of a cluster
    serves without its peers (it retries them), so the order does not matter."""
    for node in nodes:
        node.launch()
    for node in nodes:
        node.wait_serving()


def stop_all(nodes: Sequence[Node]) -> None:
    for node in nodes:
        if node.process is not None and node.process.poll() is None:
            node.process.send_signal(signal.SIGTERM)
    for node in nodes:
        if node.process is not None:
            try:
                node.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait(timeout=15)
            node.process = None
