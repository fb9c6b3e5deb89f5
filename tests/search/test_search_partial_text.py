"""A text search with a shard missing: refused by default, answered with ``allow_partial``
over the other shards, exactly, and flagged partial with the missing shard's name.

Three shard processes and a coordinator process; one shard is killed with SIGKILL."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from blocks.core.errors import Timeout, Unavailable
from blocks.search import search_pb2
from blocks.search.api import Metric
from blocks.search.bm25 import BM25Index, CorpusStats
from blocks.search.client import SearchClient
from blocks.search.coordinator_node import CoordinatorNode
from blocks.search.node import SearchNode
from blocks.search.routing import ShardRing
from blocks.search.service import make_vector_index

SERVE = [sys.executable, "-m", "blocks", "search", "serve", "--listen", "127.0.0.1:0", "--json"]
NAMES = ["shard-0", "shard-1", "shard-2"]
WORDS = ["red", "green", "blue", "cyan", "magenta", "yellow", "black", "white", "grey"]
DOCUMENTS = [
    (f"doc-{n}", " ".join(random.Random(n).choices(WORDS, k=3 + n % 7))) for n in range(90)
]


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


def reference(documents: list[tuple[str, str]], query: str, k: int) -> list[tuple[str, float]]:
    index = BM25Index()
    for doc_id, text in documents:
        index.add(doc_id, text)
    return [(hit.doc_id, hit.score) for hit in index.search(query, k)]


@pytest.mark.process
def test_bm25_with_a_killed_shard_is_refused_or_answered_partial_and_exact(
    tmp_path: Path,
) -> None:
    shard_argv = ("--dim", "4", "--metric", "l2", "--kind", "faiss", "--spec", "Flat")
    processes = [launch(*shard_argv, "--data-dir", str(tmp_path / name)) for name in NAMES]
    try:
        addresses = [address_of(process) for process in processes]
        spec = ",".join(f"{name}={address}" for name, address in zip(NAMES, addresses, strict=True))
        processes.append(launch("--remote-shards", spec, "--deadline-ms", "30000"))
        with SearchClient(address_of(processes[-1]), timeout_s=60) as client:
            client.index_documents(DOCUMENTS)
            queries = ["red", "green blue", "black white grey magenta"]
            for query in queries:
                complete = client.search_text_partial(query, 10)
                assert not complete.partial and complete.missing_shard_names == ()
                got = [(hit["id"], hit["score"]) for hit in complete.hits]
                assert got == reference(DOCUMENTS, query, 10)

            processes[2].send_signal(signal.SIGKILL)
            processes[2].wait(timeout=30)
            with pytest.raises((Unavailable, Timeout)):
                client.search_text("red", 10)  # the default refuses a partial answer
            ring = ShardRing(NAMES)
            present = [(d, t) for d, t in DOCUMENTS if ring.owner_of_document(d) != 2]
            assert 0 < len(present) < len(DOCUMENTS)
            for query in queries:
                found = client.search_text_partial(query, 10)
                assert found.partial and found.missing_shard_names == ("shard-2",)
                got = [(hit["id"], hit["score"]) for hit in found.hits]
                assert got == reference(present, query, 10), query  # statistics of the rest
            cli = subprocess.run(
                [sys.executable, "-m", "blocks", "search", "query", "--address", client.address,
                 "--text", "red", "--allow-partial", "--json"],
                capture_output=True, text=True, timeout=180, check=False,
            )  # fmt: skip
            assert cli.returncode == 0, cli.stderr
            assert "shard-2" in cli.stderr
            assert [hit["id"] for hit in json.loads(cli.stdout)] == [
                d for d, _ in reference(present, "red", 10)
            ]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)


# -- shards lost between phases (stand-in shards: no processes) ---------------------------------


class ToyEmbedder:
    """Deterministic 4-d embeddings from a hash of the text: no two distinct texts tie, so
    rankings by meaning have one right order (what they mean does not matter here)."""

    dim = 4

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.array(
            [np.random.default_rng(list(text.encode())).normal(size=4) for text in texts],
            dtype=np.float32,
        )


class StandInCoordinator:
    """``scatter`` answered by in-process nodes; ``lose[(method, mode)]`` shards miss it."""

    def __init__(self, nodes: list[SearchNode], lose: dict[tuple[str, str], set[int]]) -> None:
        self.nodes, self.lose = nodes, lose
        self.deadline_ms = 1_000
        self.shard_names = NAMES
        self.dim, self.metric = 2, Metric.L2

    def scatter(self, method: str, request: Any, budget_ms: int) -> Any:
        mode = getattr(request, "mode", "")
        lost = self.lose.get((method, mode), set())
        replies: dict[int, Any] = {}
        for shard, node in enumerate(self.nodes):
            if shard in lost:
                continue
            if method == "TextStats":
                stats = node.text_stats(request.query)
                replies[shard] = search_pb2.TextStatsReply(
                    num_docs=stats.num_docs,
                    total_length=stats.total_length,
                    doc_freq=stats.doc_freq,
                )
                continue
            stats = None
            if request.has_stats:
                stats = CorpusStats(
                    int(request.num_docs), int(request.total_length), dict(request.doc_freq)
                )
            hits = node.search_text(request.query, request.k, mode, stats=stats, record=False)
            replies[shard] = search_pb2.SearchTextReply(
                hits=[search_pb2.TextHit(id=i, score=s, text=t) for i, s, t in hits]
            )
        return replies, sorted(lost), False


def stand_in(lose: dict[tuple[str, str], set[int]]) -> tuple[CoordinatorNode, SearchNode]:
    ring = ShardRing(NAMES)
    nodes = []
    for shard in range(3):
        node = SearchNode(
            make_vector_index(2, "l2", kind="faiss", spec="Flat"), embedder=ToyEmbedder()
        )
        node.index_documents([(d, t) for d, t in DOCUMENTS if ring.owner_of_document(d) == shard])
        nodes.append(node)
    whole = SearchNode(
        make_vector_index(2, "l2", kind="faiss", spec="Flat"), embedder=ToyEmbedder()
    )
    whole.index_documents([(d, t) for d, t in DOCUMENTS if ring.owner_of_document(d) != 1])
    coordinator: Any = StandInCoordinator(nodes, lose)
    return CoordinatorNode(coordinator), whole


def test_a_shard_lost_in_the_second_phase_is_left_out_of_the_statistics_too() -> None:
    node, without_one = stand_in({("SearchText", "bm25"): {1}})
    hits, missing = node.search_text_partial("red green", 10, "bm25", allow_partial=True)
    assert missing == [1]
    want = without_one.search_text("red green", 10, "bm25", record=False)
    assert [(d, s) for d, s, _ in hits] == [(d, s) for d, s, _ in want]
    with pytest.raises(Unavailable):
        node.search_text_partial("red", 10, "bm25", allow_partial=False)


def test_hybrid_leaves_out_of_both_rankings_a_shard_only_one_of_them_lost() -> None:
    node, without_one = stand_in({("SearchText", "semantic"): {1}})
    for mode in ("semantic", "hybrid"):
        hits, missing = node.search_text_partial("red blue", 8, mode, allow_partial=True)
        assert missing == [1], mode
        want = without_one.search_text("red blue", 8, mode, record=False)
        assert [(d, round(s, 6)) for d, s, _ in hits] == [(d, round(s, 6)) for d, s, _ in want]
