"""``blocks demo`` part for search: a 2-shard x 2-replica vector cluster, BM25, typeahead, MiniLM.

Four search nodes start on 127.0.0.1 (ports from the OS). A ``ShardedIndex`` over their
clients indexes seeded clustered vectors and answers exactly like one local index; one
replica is stopped and searches fail over; then the second replica of that shard is stopped
and a search that allows it comes back flagged partial. Then a node indexes sentences, answers
BM25 and (when the MiniLM package is installed) by meaning, and completes query prefixes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np

from blocks.search.client import SearchClient
from blocks.search.exact import ExactIndex
from blocks.search.service import SearchNode, build_server
from blocks.search.sharded import ShardedIndex
from blocks.search.synthetic import clustered_vectors, sentences

__all__ = ["demo"]


async def demo(say: Callable[[str], None]) -> None:
    servers = []
    clients: list[SearchClient] = []
    sharded: ShardedIndex | None = None
    try:
        for _ in range(4):
            server, _service = build_server(SearchNode(ExactIndex(32, "l2")))
            await server.start()
            servers.append(server)
            clients.append(SearchClient(server.address, timeout_s=5))
        say(f"4 search nodes on {', '.join(s.address for s in servers)}")
        sharded = await asyncio.to_thread(
            ShardedIndex, [[clients[0], clients[1]], [clients[2], clients[3]]], timeout_ms=3000
        )
        corpus, queries = clustered_vectors(20_000, 32, seed=1, queries=5)
        started = time.monotonic()
        await asyncio.to_thread(sharded.add, np.arange(len(corpus)), corpus)
        say(
            f"indexed {len(corpus)} vectors over 2 shards x 2 replicas in {time.monotonic() - started:.2f}s"
        )
        local = ExactIndex(32, "l2")
        local.add(np.arange(len(corpus)), corpus)
        result = await asyncio.to_thread(sharded.search, queries, 5)
        same = np.array_equal(result.ids, local.search(queries, 5).ids)
        say(f"query 0 -> ids {result.ids[0].tolist()}; equal to one local index: {same}")
        await servers[0].stop(grace_s=0.5)
        result = await asyncio.to_thread(sharded.search, queries, 5)
        say(f"stopped one replica of shard 0: still complete (partial={result.partial})")
        await servers[1].stop(grace_s=0.5)
        result = await asyncio.to_thread(lambda: sharded.search(queries, 5, allow_partial=True))
        say(f"stopped shard 0 entirely: partial={result.partial}, missing={result.missing_shards}")
        await _text_part(say)
    finally:
        if sharded is not None:
            sharded.close()
        for client in clients:
            client.close()
        for server in servers:
            await server.stop(grace_s=0.5)


async def _text_part(say: Callable[[str], None]) -> None:
    embedder = None
    try:
        from blocks.search.embed import MiniLMEmbedder

        embedder = await asyncio.to_thread(MiniLMEmbedder)
    except Exception as error:  # the model package is optional for the demo
        say(f"(semantic search skipped: {error})")
    server, _service = build_server(SearchNode(ExactIndex(4, "l2"), embedder=embedder))
    await server.start()
    client = SearchClient(server.address, timeout_s=30)
    try:
        texts, _topics = sentences(300, seed=2)
        docs = [(f"s{i}", text) for i, text in enumerate(texts)]
        started = time.monotonic()
        await asyncio.to_thread(client.index_documents, docs)
        say(f"indexed {len(docs)} sentences in {time.monotonic() - started:.2f}s")
        hits = await asyncio.to_thread(client.search_text, "rocket orbit", 2)
        for hit in hits:
            say(f"  bm25 'rocket orbit'  {hit['score']:.3f}  {hit['text']}")
        if embedder is not None:
            hits = await asyncio.to_thread(client.search_text, "money and prices", 2, "semantic")
            for hit in hits:
                say(f"  meaning 'money and prices'  {hit['score']:.3f}  {hit['text']}")
        for query in ["rocket launch", "rocket orbit", "rocket orbit", "recipe with garlic"]:
            await asyncio.to_thread(client.search_text, query, 1)
        completions = await asyncio.to_thread(client.suggest, "r", 3)
        say(f"typeahead 'r' -> {completions}")
    finally:
        client.close()
        await server.stop(grace_s=0.5)
