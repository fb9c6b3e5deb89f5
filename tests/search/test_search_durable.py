"""A search node's journal: acknowledged mutations survive a crash, snapshots spare a rebuild.

In process, a "crash" is a node whose journal is closed without a snapshot (what a ``kill -9``
leaves: the fsynced log, the last snapshot); a fresh node on the same directory must hold
exactly what a dict model of the acknowledged operations holds, for every index kind. The
process test does the real ``kill -9``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from blocks.core.errors import InvalidArgument
from blocks.search.durable import MANIFEST_NAME
from blocks.search.exact import ExactIndex
from blocks.search.faiss_index import FaissIndex
from blocks.search.service import SearchNode

DIM = 4
KINDS = ["exact", "Flat", "HNSW32", "IVF4,Flat"]


def make_index(kind: str) -> Any:
    if kind == "exact":
        return ExactIndex(DIM, "l2")
    return FaissIndex(DIM, kind, "l2", nprobe=4)


def stored(node: SearchNode, model: dict[int, np.ndarray]) -> None:
    """Every model vector is found as its own nearest neighbour; nothing else is stored."""
    assert len(node.vectors) == len(model)
    if not model:
        return
    ids = np.array(sorted(model), dtype=np.int64)
    result = node.vectors.search(np.stack([model[i] for i in ids.tolist()]), 1)
    assert result.ids[:, 0].tolist() == ids.tolist()


@pytest.mark.parametrize("kind", KINDS)
def test_replay_after_a_crash_restores_every_acknowledged_operation(
    kind: str, tmp_path: Path
) -> None:
    rng = random.Random(kind)
    model: dict[int, np.ndarray] = {}
    node = SearchNode(make_index(kind), data_dir=str(tmp_path), checkpoint_records=7)
    node.load()
    if kind.startswith("IVF"):
        node.train_vectors(np.random.default_rng(0).normal(size=(64, DIM)) * 100)
    next_id = 0
    for _step in range(40):
        if model and rng.random() < 0.3:
            victims = rng.sample(sorted(model), min(len(model), rng.randint(1, 3)))
            assert node.remove_vectors(victims) == len(victims)
            for victim in victims:
                del model[victim]
        else:
            count = rng.randint(1, 4)
            ids = list(range(next_id, next_id + count))
            next_id += count
            # Far-apart points (distinct integer grid cells x 100), so top-1 is exact for all.
            vectors = np.array([[i * 100.0, -i * 50.0, i % 7 * 30.0, 1.0] for i in ids])
            node.add_vectors(ids, vectors.astype(np.float32))
            model.update(zip(ids, vectors.astype(np.float32), strict=True))
        if _step == 20:
            with pytest.raises(InvalidArgument):
                node.add_vectors([0 if 0 in model else next_id - 1], np.ones((1, DIM)))
    node.index_documents([("a", "durable cats"), ("b", "lost dogs")])
    node.delete_documents(["b"])
    node.search_text("durable cats", 5, "bm25")
    node.search_text("durable cats", 5, "bm25")
    assert node.journal is not None and node.journal.snapshot_path is not None  # checkpoints ran
    node.journal.close()  # the crash: no final snapshot

    fresh = SearchNode(make_index(kind), data_dir=str(tmp_path), checkpoint_records=7)
    fresh.load()
    try:
        stored(fresh, model)
        assert fresh.texts == {"a": "durable cats"}
        assert fresh.typeahead.suggest("dur") == [("durable cats", 2)]
        assert fresh.journal is not None and fresh.journal.replay_skipped <= 1
    finally:
        fresh.close()


def test_snapshot_reload_needs_no_replay_and_a_torn_snapshot_is_ignored(tmp_path: Path) -> None:
    node = SearchNode(ExactIndex(DIM, "l2"), data_dir=str(tmp_path))
    node.load()
    node.add_vectors([1, 2], np.eye(2, DIM, dtype=np.float32))
    node.search_text("hello world", 3, "bm25")
    snapshot = node.save()
    node.close()
    assert json.loads((tmp_path / MANIFEST_NAME).read_text())["directory"] == Path(snapshot).name
    # A crash while writing a later snapshot leaves a directory the manifest does not name.
    torn = tmp_path / "snapshot-00000000000000000099"
    torn.mkdir()
    (torn / "vectors.idx").write_bytes(b"half a file")
    fresh = SearchNode(ExactIndex(DIM, "l2"), data_dir=str(tmp_path))
    fresh.load()
    assert fresh.journal is not None and fresh.journal.records_since_snapshot == 0
    assert sorted(fresh.vectors.ids().tolist()) == [1, 2]  # type: ignore[attr-defined]
    assert fresh.typeahead.suggest("hel") == [("hello world", 1)]
    fresh.add_vectors([3], np.ones((1, DIM), dtype=np.float32))
    fresh.save()
    fresh.close()
    assert not torn.exists()


BLOCKS = [sys.executable, "-m", "blocks"]


def start_node(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            *BLOCKS,
            "search",
            "serve",
            "--dim",
            str(DIM),
            "--metric",
            "l2",
            "--kind",
            "faiss",
            "--spec",
            "HNSW32",
            "--checkpoint-records",
            "6",
            "--listen",
            "127.0.0.1:0",
            "--json",
            "--data-dir",
            str(data_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.kill()
        stderr = process.stderr.read() if process.stderr else ""
        raise AssertionError(f"node did not start: {stderr}")
    return process, json.loads(line)["address"]


def kill_hard(process: subprocess.Popen[str]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


@pytest.mark.process
def test_kill_9_loses_no_acknowledged_vector(tmp_path: Path) -> None:
    from blocks.search.client import SearchClient

    model: dict[int, np.ndarray] = {}
    process, address = start_node(tmp_path / "data")
    try:
        with SearchClient(address, timeout_s=30) as client:
            for batch in range(8):  # a snapshot after 6 records; the rest only in the log
                ids = np.arange(batch * 4, batch * 4 + 4)
                vectors = np.array([[i * 10.0, -i * 3.0, i % 5, 1.0] for i in ids], np.float32)
                client.add(ids, vectors)
                model.update(zip(ids.tolist(), vectors, strict=True))
            assert client.remove([0, 5, 31]) == 3
            for gone in (0, 5, 31):
                del model[gone]
            client.index_documents([("d1", "crash safe search")])
            client.search_text("crash safe", 3)
    finally:
        kill_hard(process)
    process, address = start_node(tmp_path / "data")
    try:
        with SearchClient(address, timeout_s=30) as client:
            assert len(client) == len(model)
            ids = sorted(model)
            result = client.search(np.stack([model[i] for i in ids]), 1)
            assert result.ids[:, 0].tolist() == ids
            assert client.suggest("cra") == [("crash safe", 1)]  # a query, not fsynced alone
            assert [h["id"] for h in client.search_text("crash", 3)] == ["d1"]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
