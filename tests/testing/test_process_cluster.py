"""ProcessCluster against a small server of our own (``python -m http.server``): start and
health, kill -9, pause/resume, restart on the same data, wipe, logs on failure, cleanup."""

from __future__ import annotations

import gc
import os
import signal
import sys
import urllib.request
from pathlib import Path

import pytest

from blocks.testing import ClusterError, NodeInfo, NodeState, ProcessCluster, ServerSpec
from blocks.testing.process import PeerAddresses

pytestmark = pytest.mark.process


def _argv(node: NodeInfo, peers: PeerAddresses) -> list[str]:
    node.data_dir.mkdir(parents=True, exist_ok=True)
    return [
        sys.executable, "-m", "http.server", str(node.ports["listen"]),
        "--bind", node.host, "--directory", str(node.data_dir),
    ]  # fmt: skip


def fetch(node: NodeInfo, path: str = "/", timeout_s: float = 2.0) -> bytes:
    with urllib.request.urlopen(f"http://{node.address()}{path}", timeout=timeout_s) as reply:
        body: bytes = reply.read()
        return body


HTTP = ServerSpec("http", ("listen",), _argv, fetch)


def test_start_kill_restart_wipe_pause(tmp_path: Path) -> None:
    with ProcessCluster(HTTP, ["a", "b"], tmp_path, health_timeout_s=30) as cluster:
        cluster.start_all()
        assert cluster.running() == ["a", "b"]
        a = cluster.info("a")
        (a.data_dir / "kept.txt").write_text("survives a restart")
        assert fetch(a, "/kept.txt") == b"survives a restart"

        pid = cluster.nodes["a"].pid
        cluster.kill("a")
        assert cluster.nodes["a"].state is NodeState.STOPPED
        with pytest.raises(OSError):
            fetch(a)
        cluster.start("a")
        assert cluster.nodes["a"].pid != pid and cluster.nodes["a"].incarnation == 2
        assert fetch(a, "/kept.txt") == b"survives a restart"

        cluster.pause("b")
        with pytest.raises(OSError):  # accepted by the kernel, never answered
            fetch(cluster.info("b"), timeout_s=0.5)
        with pytest.raises(ClusterError, match="cannot pause"):
            cluster.pause("b")
        cluster.resume("b")
        cluster.wait_healthy("b")

        with pytest.raises(ClusterError, match="stop it first"):
            cluster.wipe("a")
        cluster.kill("a")
        cluster.wipe("a")
        cluster.start("a")
        with pytest.raises(OSError):  # 404: the file went with the data directory
            fetch(a, "/kept.txt")
        assert "incarnation 3" in cluster.logs()
    assert all(node.state is NodeState.STOPPED for node in cluster.nodes.values())


def test_failure_notes_carry_each_log_and_the_context(tmp_path: Path) -> None:
    with ProcessCluster(HTTP, ["solo"], tmp_path) as cluster:
        cluster.start_all()
        with pytest.raises(OSError):  # 404, and the server logs the request
            fetch(cluster.info("solo"), "/asked-for")
        with pytest.raises(AssertionError) as failure, cluster.failure_notes("seed=7"):
            raise AssertionError("checker said no")
    notes = "\n".join(failure.value.__notes__)
    assert "seed=7" in notes and "===== solo" in notes and "/asked-for" in notes


def test_a_node_that_exits_at_start_reports_its_log(tmp_path: Path) -> None:
    def argv(node: NodeInfo, peers: PeerAddresses) -> list[str]:
        return [sys.executable, "-c", "import sys; print('bad flag --nope'); sys.exit(3)"]

    spec = ServerSpec("broken", ("listen",), argv, fetch)
    with ProcessCluster(spec, ["x"], tmp_path) as cluster:
        with pytest.raises(ClusterError, match="exited with 3") as failure:
            cluster.start_all()
        assert "bad flag --nope" in str(failure.value)


def test_processes_die_with_a_forgotten_cluster(tmp_path: Path) -> None:
    cluster = ProcessCluster(HTTP, ["a"], tmp_path)
    cluster.start_all()
    process = cluster.nodes["a"].process
    assert process is not None
    cluster.pause("a")  # even a stopped process must go
    del cluster
    gc.collect()
    assert process.poll() == -signal.SIGKILL
    with pytest.raises(ProcessLookupError):
        os.kill(process.pid, 0)


def test_peers_are_told_where_to_dial(tmp_path: Path) -> None:
    seen: dict[str, dict[str, str]] = {}

    def argv(node: NodeInfo, peers: PeerAddresses) -> list[str]:
        seen[node.name] = {peer: roles["listen"] for peer, roles in peers.items()}
        return _argv(node, peers)

    spec = ServerSpec("http", ("listen",), argv, fetch)
    with ProcessCluster(spec, ["a", "b", "c"], tmp_path) as cluster:
        cluster.dial["a"]["b"]["listen"] = "127.0.0.1:1"  # what a proxy does
        cluster.start_all()
    assert seen["a"] == {"b": "127.0.0.1:1", "c": cluster.address("c")}
    assert seen["b"] == {"a": cluster.address("a"), "c": cluster.address("c")}
