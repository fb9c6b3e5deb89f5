"""Distributed search as real processes, under the fault kit.

Four shards of two replicas each and a coordinator, each a ``blocks search serve`` process.
One test, phases in order (one cluster start keeps the area's process time low):

0. vectors and documents are written through the coordinator, routed by the ring, to every
   replica; BM25 over the shards (two phases, global statistics) equals one index.

1. hedging: the coordinator's link to one replica of ``shard-0`` is slowed by a ``LinkProxy``
   far beyond the hedge delay; every search is still complete and exact, and none takes as
   long as the injected delay (a search that waited for the slow replica would).
2. kill -9 under a query load: the slowed replica of ``shard-0`` and one of ``shard-2``
   (their twins answer: still complete), then the other of ``shard-2``; every answer is exact
   over all vectors, or flagged partial naming only ``shard-2`` and exact over the others.
   No search fails or outlives its deadline.
3. restart (each shard's journal, ``blocks.search.durable``): complete and exact again, every
   vector and document still there.
4. the kit's seeded nemesis (kill, restart, pause) on the shard nodes beside the same load,
   with the same check, then complete and exact again.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from blocks.core.errors import Timeout, Unavailable
from blocks.search.api import Metric
from blocks.search.bm25 import BM25Index
from blocks.search.client import SearchClient
from blocks.search.routing import ShardRing
from blocks.search.vectors import brute_force
from blocks.testing import ProcessCluster, ServerSpec
from blocks.testing.nemesis import FaultKind, Nemesis, nemesis_seeds, nemesis_steps
from blocks.testing.process import NodeInfo, PeerAddresses, blocks_argv
from blocks.testing.proxy import LinkProxy
from blocks.testing.servers import grpc_health_check

SHARD_NODES = {f"s{n}{twin}": f"shard-{n}" for n in range(4) for twin in "ab"}
NAMES = ["shard-0", "shard-1", "shard-2", "shard-3"]
HEDGE_MS = 200
# A search that waited for the slow replica takes at least 2 x SLOW_LINK_S (one delay each
# way), and ends before the coordinator's deadline (90% of QUERY_TIMEOUT_S, 9 s > 8 s): so
# it would come back complete and fail the ``longest_s < SLOW_LINK_S`` check, not hide as a
# partial answer or a timeout. SLOW_LINK_S is still 20 x HEDGE_MS, far beyond the hedge.
SLOW_LINK_S = 4.0  # per direction (the delays were 15 s and 40 s: 30 s of the test's time)
QUERY_TIMEOUT_S = 10.0  # the client's deadline; the coordinator answers within 90% of it
DIM, COUNT, K = 8, 400, 6


def argv(node: NodeInfo, peers: PeerAddresses) -> list[str]:
    common = ["--listen", node.address(), "--token", node.token, "--json"]
    if node.name != "coord":
        return blocks_argv(
            "search", "serve", "--dim", str(DIM), "--metric", "l2", "--kind", "faiss",
            "--spec", "Flat", "--data-dir", str(node.data_dir), *common,
        )  # fmt: skip
    groups: dict[str, list[str]] = {}
    for peer, shard in SHARD_NODES.items():
        groups.setdefault(shard, []).append(peers[peer]["listen"])
    spec = ",".join(f"{shard}={'+'.join(groups[shard])}" for shard in NAMES)
    return blocks_argv(
        "search", "serve", "--remote-shards", spec, "--hedge-ms", str(HEDGE_MS),
        "--deadline-ms", "60000", *common,
    )  # fmt: skip


SPEC = ServerSpec("search", ("listen",), argv, lambda n: grpc_health_check(n.address(), n.token))


class Load:
    """Searches in a thread until stopped; each answer is checked against brute force."""

    def __init__(self, client: SearchClient, vectors: Any, queries: Any) -> None:
        self.client, self.vectors, self.queries = client, vectors, queries
        self.owners = ShardRing(NAMES).owners_of_vectors(np.arange(COUNT))
        self.allowed_missing: set[str] = set()
        self.complete = 0
        self.partial: dict[str, int] = {}
        self.errors: list[str] = []
        self.longest_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self, result: Any) -> None:
        kept = ~np.isin(self.owners, [NAMES.index(n) for n in result.missing_shard_names])
        ids = np.flatnonzero(kept)
        want, _ = brute_force(ids, self.vectors[kept], self.queries, K, Metric.L2)
        if result.ids.tolist() != want.tolist():
            self.errors.append(f"not exact (missing {result.missing_shard_names})")
        if not set(result.missing_shard_names) <= self.allowed_missing:
            self.errors.append(f"missing {result.missing_shard_names}, none of them was faulted")

    def one(self) -> Any:
        started = time.monotonic()
        result = self.client.search(self.queries, K, allow_partial=True, timeout_s=QUERY_TIMEOUT_S)
        self.longest_s = max(self.longest_s, time.monotonic() - started)
        self.check(result)
        if result.partial:
            for name in result.missing_shard_names:
                self.partial[name] = self.partial.get(name, 0) + 1
        else:
            self.complete += 1
        return result

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.one()
            except (Timeout, Unavailable) as error:  # a search that outlived its deadline
                self.errors.append(repr(error))

    def __enter__(self) -> Load:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=120)

    def until(self, predicate: Any, what: str, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            assert not self.errors, self.errors[:5]
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)


def wait_complete(load: Load, timeout_s: float = 120.0) -> None:
    """Until a search is complete (a restarted shard is reconnected), then check one more."""
    deadline = time.monotonic() + timeout_s
    while load.one().partial:
        assert time.monotonic() < deadline, "answers stayed partial"
        time.sleep(0.1)
    assert not load.one().partial
    assert not load.errors, load.errors[:5]


WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
]
DOCUMENTS = [
    (f"doc-{n}", " ".join(random.Random(n).choices(WORDS, k=4 + n % 9))) for n in range(80)
]


def check_documents(client: SearchClient, one_shard: SearchClient) -> None:
    """Documents routed by the ring; two-phase BM25 equals one index over all of them."""
    assert client.index_documents(DOCUMENTS) == len(DOCUMENTS)
    assert 0 < one_shard.info()["documents"] < len(DOCUMENTS)
    reference = BM25Index()
    for doc_id, text in DOCUMENTS:
        reference.add(doc_id, text)
    for query in ("alpha", "beta gamma", "mu nu xi theta", "omega"):
        got = [(h["id"], h["score"]) for h in client.search_text(query, 10)]
        assert got == [(h.doc_id, h.score) for h in reference.search(query, 10)], query
    assert client.suggest("mu") == [("mu nu xi theta", 1)]
    assert one_shard.suggest("mu") == []  # the shards do not count sub-queries


@pytest.mark.process
def test_four_shards_hedge_kill_restart_and_nemesis(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    vectors = rng.normal(size=(COUNT, DIM)).astype(np.float32)
    queries = rng.normal(size=(4, DIM)).astype(np.float32)
    with ProcessCluster(SPEC, [*SHARD_NODES, "coord"], tmp_path) as cluster:
        proxy = LinkProxy(cluster.address("s0b"))
        cluster.dial["coord"]["s0b"]["listen"] = proxy.address
        with cluster.failure_notes("shards behind the coordinator"), proxy:
            for name in SHARD_NODES:
                cluster.start(name, wait=False)
            for name in SHARD_NODES:
                cluster.wait_healthy(name)
            cluster.start("coord")
            client = SearchClient(cluster.address("coord"), token=cluster.token, timeout_s=60)
            client.add(np.arange(COUNT), vectors)
            twins = [SearchClient(cluster.address(n), token=cluster.token) for n in ("s0a", "s0b")]
            assert len(twins[0]) == len(twins[1]) > 0  # writes reach every replica
            check_documents(client, twins[0])
            client.save()  # every replica snapshots; the restarts below load it
            load = Load(client, vectors, queries)

            # 1. Hedging: the slow replica is asked first about half the time.
            proxy.delay(SLOW_LINK_S)
            for _ in range(12):
                assert not load.one().partial
            assert load.longest_s < SLOW_LINK_S, load.longest_s
            proxy.heal()

            # 2. kill -9 under load.
            with load:
                cluster.kill("s0b")  # its twin s0a answers (s0b sits behind the proxy)
                cluster.kill("s2a")  # its twin s2b answers: still complete
                enough = load.complete + 3
                load.until(lambda: load.complete >= enough, "complete answers")
                load.allowed_missing = {"shard-2"}
                cluster.kill("s2b")  # no replica of shard-2 left
                load.until(lambda: load.partial.get("shard-2", 0) >= 3, "partial answers")
            assert load.partial.keys() == {"shard-2"} and not load.errors, load.errors[:5]

            # 3. Restart on the same data: nothing acknowledged is lost.
            for name in ("s2a", "s2b", "s0b"):
                cluster.start(name, wait=False)
            for name in ("s2a", "s2b", "s0b"):
                cluster.wait_healthy(name)
            wait_complete(load)
            assert len(client) == COUNT
            assert client.info()["documents"] == len(DOCUMENTS)

            # 4. The kit's nemesis on the shard nodes.
            for seed in nemesis_seeds([3]):
                nemesis = Nemesis(
                    cluster,
                    seed=seed,
                    kinds=(FaultKind.KILL, FaultKind.RESTART, FaultKind.PAUSE),
                    steps=nemesis_steps(),
                    nodes=list(SHARD_NODES),
                )
                with cluster.failure_notes(nemesis.describe()):
                    load.allowed_missing = {SHARD_NODES[f.node] for f in nemesis.faults}
                    with load:
                        nemesis.run()
                    for name in SHARD_NODES:
                        if name not in cluster.running():
                            cluster.start(name)
                    wait_complete(load)
                    assert len(client) == COUNT
            assert load.longest_s < QUERY_TIMEOUT_S
            client.close()
            for twin in twins:
                twin.close()
