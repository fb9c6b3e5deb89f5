"""A coordinator's typeahead counts survive its restart: a kill -9 (each query is logged to
the kernel before the answer) and a clean stop (a snapshot), with ``--data-dir``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from blocks.search.client import SearchClient

SERVE = [sys.executable, "-m", "blocks", "search", "serve", "--listen", "127.0.0.1:0", "--json"]


def launch(*extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*SERVE, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def address_of(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.kill()
        raise AssertionError(
            f"node did not start: {process.stderr.read() if process.stderr else ''}"
        )
    address: str = json.loads(line)["address"]
    return address


@pytest.mark.process
def test_a_restarted_coordinator_keeps_its_typeahead_counts(tmp_path: Path) -> None:
    shard_argv = ("--dim", "4", "--metric", "l2", "--kind", "faiss", "--spec", "Flat")
    processes = [launch(*shard_argv, "--data-dir", str(tmp_path / f"s{n}")) for n in range(2)]
    try:
        spec = ",".join(address_of(process) for process in processes)
        coordinator_argv = ("--remote-shards", spec, "--data-dir", str(tmp_path / "coord"))
        # a snapshot every 4 queries: the restart loads a snapshot and replays the log after it
        processes.append(launch(*coordinator_argv, "--checkpoint-records", "4"))
        with SearchClient(address_of(processes[-1]), timeout_s=60) as client:
            client.index_documents([("a", "green tea"), ("b", "green apple")])
            for query in ["green tea"] * 3 + ["green apple"] * 2 + ["grey"]:
                client.search_text(query, 5)
            counts = client.suggest("gr")
        assert counts == [("green tea", 3), ("green apple", 2), ("grey", 1)]

        processes[-1].send_signal(signal.SIGKILL)
        processes[-1].wait(timeout=30)
        processes.append(launch(*coordinator_argv))
        with SearchClient(address_of(processes[-1]), timeout_s=60) as client:
            assert client.suggest("gr") == counts
            client.search_text("grey", 5)
        processes[-1].send_signal(signal.SIGTERM)  # a clean stop snapshots
        assert processes[-1].wait(timeout=60) == 0

        processes.append(launch(*coordinator_argv))
        with SearchClient(address_of(processes[-1]), timeout_s=60) as client:
            assert client.suggest("gr") == [("green tea", 3), ("green apple", 2), ("grey", 2)]
            assert client.info()["documents"] == 2  # still the shards' documents
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
