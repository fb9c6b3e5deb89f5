"""Metadata filters through the service: attributes on add, ``where`` on search, durability.

The model is ``tests.search.test_search_filtered.matches`` (an expression evaluated on one id's
attributes by definition); a vector stored without attributes matches every ``Not`` of a leaf.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blocks.core.errors import InvalidArgument
from blocks.search import ExactIndex, FaissIndex, search_pb2
from blocks.search.api import Metric
from blocks.search.client import SearchClient
from blocks.search.coordinator import connect_shards
from blocks.search.coordinator_index import Coordinator
from blocks.search.metadata import FIELDS_PER_ID_MAX, And, Eq, Expression, In, Not, Or, Range
from blocks.search.rebalance import rebalance
from blocks.search.routing import default_shard_names
from blocks.search.service import SearchNode, build_server
from blocks.search.vectors import brute_force
from blocks.search.where import (
    FILTER_DEPTH_MAX,
    as_expression,
    expression_from_wire,
    expression_to_wire,
    parse_attribute,
)
from tests.search.test_search_filtered import COLORS, expressions, matches
from tests.search.test_search_shared_ivf import ServiceLink, shard_node
from tests.search.test_search_shared_ivf import cluster as shared_ivf_cluster
from tests.search.test_search_shared_ivf import data as shared_ivf_data

DIM = 4


@contextmanager
def serving(node: SearchNode) -> Iterator[SearchClient]:
    """``node`` behind a gRPC server on its own event-loop thread; a client to it."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server, _ = build_server(node)
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(60)
    client = SearchClient(server.address, timeout_s=30)
    try:
        yield client
    finally:
        client.close()
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def random_rows(rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    return [
        {"color": COLORS[rng.integers(3)], "price": int(rng.integers(10))}
        if rng.random() > 0.15
        else {}
        for _ in range(n)
    ]


def test_filtered_search_over_the_service_equals_brute_force_over_the_matching_rows() -> None:
    node = SearchNode(ExactIndex(DIM, "l2"))
    with serving(node) as client:
        stored: list[int] = []

        @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(seed=st.integers(0, 2**16), expression=expressions, k=st.integers(1, 12))
        def check(seed: int, expression: Expression, k: int) -> None:
            rng = np.random.default_rng(seed)
            n = int(rng.integers(1, 50))
            vectors = rng.normal(size=(n, DIM)).astype(np.float32)
            rows = random_rows(rng, n)
            client.remove(stored)  # each example starts from an empty node
            client.add(np.arange(n), vectors, rows)
            stored[:] = range(n)
            queries = rng.normal(size=(3, DIM)).astype(np.float32)
            got = client.search(queries, k, where=expression)
            keep = np.array([i for i in range(n) if matches(rows[i], expression)], np.int64)
            want_ids, want_distances = brute_force(keep, vectors[keep], queries, k, Metric.L2)
            assert got.ids.tolist() == want_ids.tolist()  # k results whenever k rows match
            found = want_ids >= 0
            np.testing.assert_allclose(got.distances[found], want_distances[found], rtol=1e-4)

        check()


def test_an_approximate_node_returns_k_when_a_selective_filter_has_k() -> None:
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(2000, 8)).astype(np.float32)
    index = FaissIndex(8, "IVF16,Flat", "l2", nprobe=1)
    index.train(vectors)
    rows = [{"rare": True} if i % 97 == 0 else {"rare": False} for i in range(2000)]
    with serving(SearchNode(index)) as client:
        client.add(np.arange(2000), vectors, rows)
        got = client.search(rng.normal(size=(10, 8)), 10, where={"rare": True}, nprobe=1)
    assert ((got.ids >= 0).sum(axis=1) == 10).all()  # 21 rare ids spread over 16 lists
    assert set(got.ids.ravel().tolist()) <= set(range(0, 2000, 97))


def test_bad_attributes_and_filters_are_refused_and_nothing_is_stored() -> None:
    vectors = np.eye(DIM, dtype=np.float32)
    with serving(SearchNode(ExactIndex(DIM, "l2"))) as client:
        client.add([0], vectors[:1], [{"color": "red"}])
        too_many = {f"f{n}": n for n in range(FIELDS_PER_ID_MAX + 1)}
        for bad in (
            [{"x": float("nan")}, {}],
            [{"x": [1]}, {}],
            [{"": 1}, {}],
            [{"x": 1 << 64}, {}],
            [too_many, {}],
            [{"x": 1}],  # one mapping for two ids
        ):
            with pytest.raises(InvalidArgument):
                client.add([1, 2], vectors[1:3], bad)
        assert len(client) == 1
        for where in (
            {"color": {"$regex": "r.*"}},
            {"$or": {"color": "red"}},
            {"price": {"$gt": "cheap"}},
            {"price": {"$gt": 1, "$gte": 2}},
            "{not json",
            [{"color": "red"}],
        ):
            with pytest.raises(InvalidArgument):
                client.search(vectors[:1], 1, where=where)
        deep: Expression = Eq("color", "red")
        for _ in range(FILTER_DEPTH_MAX):
            deep = Not(deep)
        with pytest.raises(InvalidArgument, match="nests"):
            client.search(vectors[:1], 1, where=deep)
        stub = client._stub  # a peer that sends a filter with no kind set
        request = search_pb2.SearchVectorsRequest(k=1, packed_reply=True)
        request.where.SetInParent()
        request.queries.rows, request.queries.dim = 1, DIM
        request.queries.values = vectors[:1].tobytes()
        with pytest.raises(Exception, match="none of its kinds"):
            stub.SearchVectors(request, timeout=10)
        assert client.search(vectors[:1], 2, where={"color": "red"}).ids.tolist() == [[0, -1]]


def test_the_json_form_and_the_wire_form_mean_the_same_expression() -> None:
    parsed = as_expression(
        '{"color": {"$in": ["red", "blue"]}, "price": {"$gt": 1, "$lte": 5},'
        ' "$or": [{"sale": true}, {"$not": {"tag": {"$nin": ["x"]}}}], "size": {"$ne": 3}}'
    )
    assert parsed == And(
        (
            In("color", frozenset({"red", "blue"})),
            Range("price", 1, 5, low_inclusive=False),
            Or((Eq("sale", True), Not(Not(In("tag", frozenset({"x"})))))),
            Not(Eq("size", 3)),
        )
    )
    assert parse_attribute("color=red") == ("color", "red")
    assert parse_attribute("size=3") == ("size", 3) and parse_attribute("ok=true") == ("ok", True)
    assert parse_attribute('code="007"') == ("code", "007")
    assert parse_attribute("price=2.5") == ("price", 2.5)
    with pytest.raises(InvalidArgument):
        parse_attribute("novalue")


@settings(max_examples=60, deadline=None)
@given(expression=expressions)
def test_an_expression_survives_the_wire(expression: Expression) -> None:
    message = search_pb2.FilterExpression()
    expression_to_wire(expression, message)
    decoded = search_pb2.FilterExpression.FromString(message.SerializeToString())
    assert expression_from_wire(decoded) == expression


def test_a_durable_node_keeps_attributes_through_replay_and_snapshot(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(30, DIM)).astype(np.float32)
    rows = random_rows(rng, 30)
    rows[4] = {"color": "red", "price": 2.5, "sale": True, "code": "007"}
    expression = Not(Eq("color", "red"))

    def opened() -> SearchNode:
        node = SearchNode(ExactIndex(DIM, "l2"), data_dir=str(tmp_path))
        node.load()
        return node

    def answer(node: SearchNode) -> list[list[int]]:
        result = node.search_vectors(vectors[:3], 8, None, expression, {})
        ids: list[list[int]] = result.ids.tolist()
        return ids

    node = opened()
    node.add_vectors(np.arange(30), vectors, rows)
    node.remove_vectors([0, 1])
    with pytest.raises(InvalidArgument):
        node.add_vectors([40], vectors[:1], [{"bad": float("inf")}])  # refused before the log
    expected, kept = answer(node), {i: node.metadata.get(i) for i in range(30)}
    node.close()  # a crash: no snapshot, the log alone
    node = opened()
    assert answer(node) == expected and {i: node.metadata.get(i) for i in range(30)} == kept
    assert node.journal is not None and node.journal.replay_skipped == 0
    assert node.metadata.get(4) == rows[4] and isinstance(node.metadata.get(4)["sale"], bool)
    node.save()
    node.close()
    node = opened()  # from the snapshot (metadata.json), nothing left to replay
    assert node.journal is not None and node.journal.records_since_snapshot == 0
    assert answer(node) == expected and {i: node.metadata.get(i) for i in range(30)} == kept
    node.close()


def test_a_coordinator_writes_attributes_to_every_replica_and_filters_on_every_shard(
    loop: asyncio.AbstractEventLoop,
) -> None:
    nodes = [[SearchNode(ExactIndex(DIM, "l2")) for _ in range(2)] for _ in range(2)]
    links = [[ServiceLink(node, loop) for node in twins] for twins in nodes]
    names = default_shard_names(2)
    shards: Any = list(zip(names, links, strict=True))  # stand-ins for ReplicaLink
    coordinator = Coordinator(shards, dim=DIM, metric="l2")
    rng = np.random.default_rng(9)
    vectors = rng.normal(size=(80, DIM)).astype(np.float32)
    rows = random_rows(rng, 80)
    coordinator.add(np.arange(80), vectors, rows)
    for first, second in nodes:
        assert len(first.metadata) > 0 and first.metadata.items() == second.metadata.items()
    where = {"$or": [{"color": "red"}, {"price": {"$gt": 6}}]}
    keep = np.array([i for i in range(80) if matches(rows[i], as_expression(where))])  # type: ignore[arg-type]
    want, _ = brute_force(keep, vectors[keep], vectors[:4], 9, Metric.L2)
    assert coordinator.search(vectors[:4], 9, where=where).ids.tolist() == want.tolist()
    links[0][0].down = links[1][1].down = True  # each shard's twin answers
    assert coordinator.search(vectors[:4], 9, where=where).ids.tolist() == want.tolist()
    coordinator.close()


def test_a_rebalance_moves_attributes_with_their_vectors() -> None:
    rng = np.random.default_rng(12)
    vectors = rng.normal(size=(60, DIM)).astype(np.float32)
    rows = random_rows(rng, 60)
    nodes = [SearchNode(ExactIndex(DIM, "l2")) for _ in range(3)]
    with serving(nodes[0]) as a, serving(nodes[1]) as b, serving(nodes[2]) as c:
        old = f"shard-0={a.address},shard-1={b.address}"
        new = f"{old},shard-2={c.address}"
        before = connect_shards(old, timeout_ms=30_000)
        before.add(np.arange(60), vectors, rows)
        before.close()
        report = rebalance(old, new, page_rows=16)
        assert sum(report.vectors.values()) == len(nodes[2].vectors) > 0
        moved = [int(i) for i in nodes[2].rows.sorted_ids()]  # type: ignore[union-attr]
        assert all(nodes[2].metadata.get(i) == rows[i] for i in moved)
        after = connect_shards(new, timeout_ms=30_000)
        where = Not(Eq("color", "blue"))
        keep = np.array([i for i in range(60) if matches(rows[i], where)])
        want, _ = brute_force(keep, vectors[keep], vectors[:3], 8, Metric.L2)
        assert after.search(vectors[:3], 8, where=where).ids.tolist() == want.tolist()
        after.close()


def test_the_cli_indexes_vectors_with_attributes_from_json_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from blocks.cli import main

    vectors = np.eye(DIM, dtype=np.float32) * np.arange(1, DIM + 1, dtype=np.float32)[:, None]
    np.save(tmp_path / "v.npy", vectors)
    rows = [{"color": "red"}, {}, {"color": "red", "price": 2}, {"color": "blue"}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    (tmp_path / "short.jsonl").write_text('{"color": "red"}\n')
    with serving(SearchNode(ExactIndex(DIM, "l2"))) as client:
        index = ["search", "index", "--address", client.address, "--vectors"]
        index.append(str(tmp_path / "v.npy"))
        assert main([*index, "--attributes", str(tmp_path / "short.jsonl")]) == 2  # 1 line, 4
        assert len(client) == 0
        assert main([*index, "--attributes", str(tmp_path / "a.jsonl"), "--first-id", "10"]) == 0
        capsys.readouterr()
        query = ["search", "query", "--address", client.address, "--vector=0,0,0,0", "-k", "4"]
        assert main([*query, "--where", '{"color": "red"}', "--json"]) == 0
        assert json.loads(capsys.readouterr().out)[0]["ids"] == [10, 12, -1, -1]


def test_shared_ivf_shards_widen_their_preassigned_lists_for_a_selective_filter(
    loop: asyncio.AbstractEventLoop,
) -> None:
    vectors, queries = shared_ivf_data()
    links = [ServiceLink(shard_node(Metric.L2), loop) for _ in range(2)]
    coordinator = shared_ivf_cluster(links, Metric.L2)
    coordinator.train(vectors[:2_000])
    rare = set(range(0, len(vectors), 150))  # 20 ids spread over the clusters
    coordinator.add(
        np.arange(len(vectors)), vectors, [{"rare": i in rare} for i in range(len(vectors))]
    )
    got = coordinator.search(queries, 10, nprobe=1, where={"rare": True})
    assert ((got.ids >= 0).sum(axis=1) == 10).all()  # one list of 32 holds about 1 of them
    assert set(got.ids.ravel().tolist()) <= rare
    shard: Any = links[0].node.vectors  # its own coarse search picks the coordinator's lists
    unwidened = shard.search(queries, 10, sorted(rare), nprobe=1)
    assert ((unwidened.ids >= 0).sum(axis=1) < 10).all()  # what a scan of one list finds
    coordinator.close()
