"""Issue #14, memory before authentication, reproduced with the kit: 20 connections that
never authenticate each send the first 8 MiB of a frame that declares 16 MiB to a kv node's
data path. Before the TCP budgets (89c6a76) the node's peak resident memory grew by about
170 MB; now the frames are refused early and it grows by far less. The node still answers."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import pytest

from blocks.core.transport import FRAME_HEADER_BYTES
from blocks.testing import ProcessCluster
from blocks.testing.servers import kv_spec

pytestmark = pytest.mark.process
CONNECTIONS = 20
DECLARED_BYTES = 16 * 1024 * 1024 - 1
SENT_BYTES = 8 * 1024 * 1024
CHUNK_BYTES = 256 * 1024
SEND_TIMEOUT_S = 5.0  # a node that stops reading (backpressure) is doing the right thing
GROWTH_MAX_BYTES = 64 * 1024 * 1024


def _status_bytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def _send_partial_frame(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=SEND_TIMEOUT_S)
    with contextlib.suppress(OSError):  # refused, reset or stalled: all fine
        sock.sendall(DECLARED_BYTES.to_bytes(FRAME_HEADER_BYTES, "big"))
        chunk = b"\x00" * CHUNK_BYTES
        for _ in range(SENT_BYTES // CHUNK_BYTES):
            sock.sendall(chunk)
    return sock


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_unauthenticated_partial_frames_do_not_grow_a_node(tmp_path: Path) -> None:
    spec = kv_spec(replicas=1, read_quorum=1, write_quorum=1)
    with ProcessCluster(spec, ["solo"], tmp_path) as cluster, cluster.failure_notes("memory"):
        cluster.start_all()
        pid = cluster.nodes["solo"].pid
        assert pid is not None
        before = _status_bytes(pid, "VmRSS")
        sockets = [_send_partial_frame(cluster.address("solo")) for _ in range(CONNECTIONS)]
        try:
            growth = _status_bytes(pid, "VmHWM") - before
        finally:
            for sock in sockets:
                sock.close()
        assert growth < GROWTH_MAX_BYTES, f"peak resident memory grew by {growth >> 20} MiB"
        cluster.wait_healthy("solo")  # and it still serves
