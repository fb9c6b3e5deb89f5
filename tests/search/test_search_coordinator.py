"""Search across processes: two shard nodes and a coordinator, exact merge equal to brute force.

The coordinator (``serve --remote-shards``) holds no data; a shard killed with SIGKILL makes
searches fail with a retryable error, never a silently incomplete answer.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from blocks.core.errors import InvalidArgument, Timeout, Unavailable
from blocks.search.api import Metric
from blocks.search.coordinator import parse_shards
from blocks.search.vectors import brute_force

BLOCKS = [sys.executable, "-m", "blocks", "search", "serve", "--listen", "127.0.0.1:0", "--json"]


def launch(*extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*BLOCKS, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def address_of(process: subprocess.Popen[str]) -> str:
    """The address the node announces on its first stdout line (it blocks until then)."""
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.kill()
        stderr = process.stderr.read() if process.stderr else ""
        raise AssertionError(f"node did not start: {stderr}")
    address: str = json.loads(line)["address"]
    return address


def test_parse_shards() -> None:
    assert parse_shards("a:1+b:2, c:3") == [["a:1", "b:2"], ["c:3"]]
    for bad in ("", "a", "a:1+", "a:x", "a:1,,b:2"):
        with pytest.raises(InvalidArgument):
            parse_shards(bad)


@pytest.mark.process
def test_coordinator_merges_shards_exactly_and_refuses_a_partial_answer(tmp_path: Path) -> None:
    from blocks.search.client import SearchClient

    processes: list[subprocess.Popen[str]] = []
    try:
        # Both shards start at once (faiss Flat: no torch to import), then the coordinator.
        for number in range(2):
            processes.append(
                launch(
                    *("--dim", "6", "--metric", "ip", "--kind", "faiss", "--spec", "Flat"),
                    *("--data-dir", str(tmp_path / f"s{number}")),
                )
            )
        shards = [address_of(process) for process in processes]
        processes.append(launch("--remote-shards", ",".join(shards)))
        address = address_of(processes[-1])
        rng = np.random.default_rng(5)
        vectors = rng.normal(size=(300, 6)).astype(np.float32)
        queries = rng.normal(size=(8, 6)).astype(np.float32)
        with SearchClient(address, timeout_s=30) as client:
            assert client.info()["kind"] == "coordinator"
            client.add(np.arange(300), vectors)
            assert len(client) == 300
            with SearchClient(shards[0], timeout_s=30) as first:
                assert 0 < len(first) < 300  # the vectors really are spread
            got = client.search(queries, 7)
            want_ids, _ = brute_force(np.arange(300), vectors, queries, 7, Metric.IP)
            assert got.ids.tolist() == want_ids.tolist()
            processes[1].send_signal(signal.SIGKILL)
            processes[1].wait(timeout=30)
            with pytest.raises((Unavailable, Timeout)):
                client.search(queries, 7)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
