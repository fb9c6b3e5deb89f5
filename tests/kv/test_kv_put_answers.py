"""A client's put is answered through a future the node settles at the flush that saves it
(no task per put on a TCP listener): every such request is forgotten once answered,
forwarded, or abandoned by its caller, and a failed or forwarded put still answers right.
Replies that depend on nothing unsaved are answered without waiting for a flush."""

from __future__ import annotations

import asyncio
from typing import Literal

import pytest

from blocks.core.errors import InvalidArgument
from blocks.core.ready import Ready
from blocks.kv.cluster.driver import KVNode
from blocks.kv.cluster.messages import Reply
from blocks.kv.local_cluster import LocalCluster


def _idle(node: KVNode) -> bool:
    return node.requests_in_flight == 0 and not node._requests._shapes


@pytest.mark.parametrize("kind", ["memory", "tcp"])
def test_every_answered_put_is_forgotten(kind: Literal["memory", "tcp"]) -> None:
    async def body() -> None:
        async with LocalCluster(
            nodes=1, replicas=1, read_quorum=1, write_quorum=1, transport=kind
        ) as cluster:
            client = cluster.client(timeout_s=5.0)
            await asyncio.gather(*(client.put(b"k%d" % i, b"v") for i in range(50)))
            assert (await client.get(b"k7")).value == b"v"
            node = cluster.node("n1")
            assert _idle(node)
            # A request the caller gave up on (the transport cancels its future) is still
            # forgotten when the node's answer comes.
            message = ["put", b"gone", b"v", None, None, None, 0]
            future = node._handle("someone", message)
            assert isinstance(future, asyncio.Future)
            future.cancel()
            await asyncio.sleep(0.05)
            assert _idle(node) and (await client.get(b"gone")).value == b"v"
            with pytest.raises(InvalidArgument):
                node._handle("someone", ["put", b"short"])
            assert _idle(node)

    asyncio.run(asyncio.wait_for(body(), 30))


def test_a_put_through_a_node_without_a_replica_is_forwarded_and_forgotten() -> None:
    async def body() -> None:
        async with LocalCluster(nodes=4, replicas=1, read_quorum=1, write_quorum=1) as cluster:
            await asyncio.sleep(0.5)  # gossip: every node sees the others
            nodes = [cluster.node(f"n{i}") for i in range(1, 5)]
            key = b"forwarded"
            outsider = next(n for n in nodes if n.node_id not in n._placement(key)[:1])
            reply = await outsider._handle("someone", ["put", key, b"v", None, None, None, 0])
            assert reply[1] != outsider.node_id  # coordinated by the key's replica
            assert outsider.counters["forwarded"] == 1
            assert all(_idle(n) for n in nodes)
            assert (await cluster.client().get(key)).value == b"v"

    asyncio.run(asyncio.wait_for(body(), 30))


def test_replies_alone_with_nothing_unsaved_are_answered_without_a_flush_turn() -> None:
    """A put's ack or a read's copy that answers a request, in a step that changed nothing
    and with nothing held or unsaved, resolves it at once; with a key unsaved it waits for the
    flush that saves it (the ``Ready`` rule)."""

    async def body() -> None:
        async with LocalCluster(1, 1, 1, 1) as cluster:
            node = cluster.node("n1")
            await node.put(b"k", b"v")
            stored = node.core.objects[b"k"]
            assert not node.core.dirty
            request_id, answer = node._requests.new(False, b"k")
            node._run(Ready(replies=[Reply(request_id, stored)]))
            assert answer.done() and answer.result() is stored  # no loop turn
            node.core._store(b"unsaved", stored, None)
            request_id, answer = node._requests.new(False, b"k")
            node._run(Ready(replies=[Reply(request_id, stored)]))
            assert not answer.done()  # held for the save
            await asyncio.sleep(0)
            assert answer.done() and not node.core.dirty
            assert b"unsaved" in {key for key, _, _ in node.store.load()}

    asyncio.run(asyncio.wait_for(body(), 30))
