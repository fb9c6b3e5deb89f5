"""Metadata filters across real processes: two durable shards and a coordinator.

Vectors with attributes are added through the coordinator (and one through the CLI's
``add --attr``), filtered searches (the client's ``where`` and the CLI's ``--where``) equal
brute force over the matching rows of every shard; then one shard is killed with SIGKILL
(its attributes are only in its log) and the other stopped cleanly (they are in its
snapshot), both restarted on their ports: the filtered answers are the same.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from blocks.core.errors import Unavailable
from blocks.search.api import Metric
from blocks.search.client import SearchClient
from blocks.search.vectors import brute_force
from tests.search.test_search_shared_ivf_process import address_of

BLOCKS = [sys.executable, "-m", "blocks", "search"]
DIM, COUNT, K = 4, 120, 7
FILTERS: list[Any] = [
    {"color": "red"},
    {"price": {"$gte": 3, "$lt": 7}},
    {"$or": [{"color": {"$in": ["green", "blue"]}}, {"sale": True}]},
    {"color": {"$ne": "red"}},  # the rows without attributes match too
]


def serve(*argv: str, port: int = 0) -> subprocess.Popen[str]:
    listen = f"127.0.0.1:{port}"
    return subprocess.Popen(
        [*BLOCKS, "serve", "--listen", listen, "--json", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def shard(data_dir: Path, port: int = 0) -> subprocess.Popen[str]:
    argv = ["--dim", str(DIM), "--metric", "l2", "--kind", "faiss", "--spec", "Flat"]
    return serve(*argv, "--data-dir", str(data_dir), port=port)


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BLOCKS, *argv, "--json"], capture_output=True, text=True, timeout=120)


def matching(row: dict[str, Any], where: dict[str, Any]) -> bool:
    """The four filters above, by hand."""
    if where == FILTERS[0]:
        return row.get("color") == "red"
    if where == FILTERS[1]:
        return isinstance(row.get("price"), int) and 3 <= row["price"] < 7
    if where == FILTERS[2]:
        return row.get("color") in ("green", "blue") or row.get("sale") is True
    return row.get("color") != "red"


def check(client: SearchClient, ids: list[int], vectors: Any, rows: list[Any]) -> None:
    queries = vectors[:3] + np.float32(0.05)
    for where in FILTERS:
        got = client.search(queries, K, where=where)
        keep = np.array([i for i, row in zip(ids, rows, strict=True) if matching(row, where)])
        want, _ = brute_force(keep, vectors[np.searchsorted(ids, keep)], queries, K, Metric.L2)
        assert got.ids.tolist() == want.tolist(), where


def wait_complete(client: SearchClient, vectors: Any) -> None:
    for _ in range(300):
        try:
            client.search(vectors[:1], 1, where={"color": "red"})
            return
        except Unavailable:
            time.sleep(0.1)
    raise AssertionError("the restarted shard never answered")


@pytest.mark.process
def test_attributes_and_filters_across_shards_through_kill_and_restart(tmp_path: Path) -> None:
    processes = [shard(tmp_path / "s0"), shard(tmp_path / "s1")]
    try:
        addresses = [address_of(process) for process in processes]
        spec = f"shard-0={addresses[0]},shard-1={addresses[1]}"
        processes.append(serve("--remote-shards", spec))
        coordinator = address_of(processes[2])
        rng = np.random.default_rng(4)
        vectors = rng.normal(size=(COUNT + 1, DIM)).astype(np.float32)
        colors = ["red", "green", "blue"]
        rows: list[Any] = [
            {"color": colors[i % 3], "price": int(rng.integers(10)), "sale": bool(i % 5 == 0)}
            if i % 7
            else {}
            for i in range(COUNT)
        ]
        client = SearchClient(coordinator, timeout_s=60)
        client.add(np.arange(COUNT), vectors[:COUNT], rows)
        vector = ",".join(str(float(v)) for v in vectors[COUNT])
        added = cli("add", "--address", coordinator, "--id", str(COUNT), f"--vector={vector}",
                    "--attr", "color=blue", "--attr", "price=4", "--attr", "sale=false")  # fmt: skip
        assert added.returncode == 0, added.stderr
        rows.append({"color": "blue", "price": 4, "sale": False})
        ids = list(range(COUNT + 1))
        check(client, ids, vectors, rows)
        queried = cli("query", "--address", coordinator, f"--vector={vector}", "-k", "1",
                      "--where", json.dumps(FILTERS[1]))  # fmt: skip
        assert json.loads(queried.stdout)[0]["ids"] == [COUNT], queried.stderr
        held = []
        for address in addresses:
            with SearchClient(address, timeout_s=30) as one_shard:
                held.append(len(one_shard))
        assert min(held) > 0 and sum(held) == COUNT + 1  # both shards hold attributed rows

        processes[0].send_signal(signal.SIGKILL)  # attributes only in its log
        processes[1].send_signal(signal.SIGTERM)  # a snapshot on a clean stop
        for process in processes[:2]:
            process.wait(timeout=60)
        for number in (0, 1):
            port = int(addresses[number].rpartition(":")[2])
            processes[number] = shard(tmp_path / f"s{number}", port)
            address_of(processes[number])
        wait_complete(client, vectors)
        check(client, ids, vectors, rows)
        client.close()
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
