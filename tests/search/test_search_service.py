"""The search service in-process: vectors, documents, typeahead, errors, remote shards."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import pytest

from blocks.core.errors import InvalidArgument, Timeout, Unauthenticated, Unavailable
from blocks.search import ExactIndex, ShardedIndex
from blocks.search.client import SearchClient
from blocks.search.contract import check_search
from blocks.search.service import SearchNode, build_server

T = TypeVar("T")


def run(coroutine: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine(), timeout=60))


async def serving(node: SearchNode, token: str | None = None) -> Any:
    server, _ = build_server(node, token=token)
    await server.start()
    return server


def test_vectors_documents_and_suggestions_over_grpc(tmp_path) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(-3, 4, size=(200, 4)).astype(np.float32)
    data[np.abs(data).sum(axis=1) == 0] = 1

    async def scenario() -> None:
        node = SearchNode(ExactIndex(4, "ip"), data_dir=str(tmp_path / "node"))
        server = await serving(node, token="s3cret")
        client = SearchClient(server.address, token="s3cret", timeout_s=10)
        try:
            call = asyncio.to_thread
            await call(client.add, np.arange(200), data)
            assert await call(len, client) == 200
            queries = data[:3] + np.float32(0.5)
            result = await call(client.search, queries, 7)
            check_search(result, dict(enumerate(data)), queries, 7, node.vectors.metric, exact=True)
            filtered = await call(client.search, queries, 3, [5, 6])
            assert set(filtered.ids.ravel().tolist()) <= {5, 6, -1}
            assert await call(client.remove, [0, 1, 999]) == 2
            with pytest.raises(InvalidArgument):
                await call(client.add, [5], data[:1])  # present already
            with pytest.raises(InvalidArgument):
                await call(client.search, queries, 0)
            docs = [("a", "the cat sat"), ("b", "dogs chase cats"), ("c", "the cat and the cat")]
            assert await call(client.index_documents, docs) == 3
            hits = await call(client.search_text, "cat", 5)
            assert [h["id"] for h in hits] == ["c", "a"]
            assert hits[0]["text"] == "the cat and the cat"
            await call(client.search_text, "cat videos", 5)
            await call(client.search_text, "cat videos", 5)
            assert (await call(client.suggest, "ca", 2))[0] == ("cat videos", 2)
            with pytest.raises(InvalidArgument, match="embed"):
                await call(client.search_text, "cat", 5, "semantic")
            assert await call(client.delete_documents, ["a", "zzz"]) == 1
            await call(client.save)
            bad = SearchClient(server.address, token="wrong", timeout_s=5)
            with pytest.raises(Unauthenticated):
                await call(bad.info)
            bad.close()
        finally:
            client.close()
            await server.stop(grace_s=1)
        fresh = SearchNode(ExactIndex(4, "ip"), data_dir=str(tmp_path / "node"))
        fresh.load()
        assert len(fresh.vectors) == 198 and sorted(fresh.texts) == ["b", "c"]

    run(scenario)


def test_remote_shards_with_replicas_fail_over_and_go_partial() -> None:
    rng = np.random.default_rng(1)
    data = rng.normal(size=(300, 8)).astype(np.float32)
    reference = ExactIndex(8, "l2")
    reference.add(np.arange(300), data)

    async def scenario() -> None:
        servers = [await serving(SearchNode(ExactIndex(8, "l2"))) for _ in range(4)]
        clients = [SearchClient(s.address, timeout_s=5) for s in servers]
        sharded: ShardedIndex | None = None
        try:
            # Building asks each node for its dim and metric: blocking calls, off the loop.
            sharded = await asyncio.to_thread(
                ShardedIndex, [[clients[0], clients[1]], [clients[2], clients[3]]], timeout_ms=4000
            )
            await asyncio.to_thread(sharded.add, np.arange(300), data)
            want = reference.search(data[:5], 6)
            got = await asyncio.to_thread(sharded.search, data[:5], 6)
            assert np.array_equal(got.ids, want.ids)
            await servers[0].stop(grace_s=0.5)  # one replica of shard 0 dies
            for _ in range(3):
                got = await asyncio.to_thread(sharded.search, data[:5], 6)
                assert np.array_equal(got.ids, want.ids) and not got.partial
            await servers[1].stop(grace_s=0.5)  # the whole of shard 0 is gone
            with pytest.raises((Unavailable, Timeout)):
                await asyncio.to_thread(sharded.search, data[:5], 6)
            partial = await asyncio.to_thread(
                lambda: sharded.search(data[:5], 6, allow_partial=True)
            )
            assert partial.partial and partial.missing_shards == (0,)
        finally:
            if sharded is not None:
                sharded.close()
            for client in clients:
                client.close()
            for server in servers:
                await server.stop(grace_s=0.5)

    run(scenario)
