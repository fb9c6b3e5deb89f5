"""Coordinator pipelining: a put's replica requests leave before the coordinator saves its own
copy. These tests hold the orderings that this makes possible to their promises: a
coordinator that dies between sending and saving never answers the put, its replicas may
hold the write, and its restarted life never reissues that write's dot; and no put is
answered before its coordinator's copy is saved."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from blocks.core.errors import StorageError, Unavailable
from blocks.kv.cluster.driver import KVNode
from blocks.kv.cluster.messages import PutReplica
from blocks.kv.cluster.persist import ObjectStore
from blocks.kv.local_cluster import LocalCluster

_N3_R2_W2: dict[str, Any] = {"nodes": 3, "replicas": 3, "read_quorum": 2, "write_quorum": 2}


def _put(node: KVNode, key: bytes, value: bytes) -> asyncio.Future[Any]:
    """A client's put handed to ``node`` as its TCP listener would (a future, no task)."""
    future = node._handle("client", ["put", key, value, None, None, None, 0])
    assert isinstance(future, asyncio.Future)
    return future


def test_a_coordinator_killed_before_its_save_never_acks_and_reissues_no_dot(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        async with LocalCluster(**_N3_R2_W2, transport="tcp", data_dir=tmp_path) as cluster:
            key = b"pipelined"  # Bitcask, sync "batch": saves wait for an fsync
            coordinator = cluster.node(cluster.node("n1")._placement(key)[0])
            replicas = [n for n in cluster.nodes.values() if n is not coordinator]
            answer = _put(coordinator, key, b"first")
            # Killed in the put's own turn: the flush that would save its copy never runs,
            # but the replica requests were already handed to the sockets.
            coordinator.crash()
            await asyncio.sleep(0.3)  # the requests arrive; the replicas' acks find no one
            with pytest.raises(Unavailable):
                answer.result()  # never acknowledged
            assert coordinator.counters["replica_writes_early"] == 2
            assert key not in dict((k, o) for k, o, _ in coordinator.store.load())
            first = [n.core.objects[key] for n in replicas if key in n.core.objects]
            assert first, "the replica requests left before the coordinator's save"
            (old_dot,) = {s.dot for obj in first for s in obj.siblings}
            assert old_dot.node == coordinator.node_id

            await coordinator.transport.close()
            coordinator.store.close()
            await cluster.restart(coordinator.node_id)
            # The restarted coordinator does not hold the first write; its next dot comes
            # from a lease past every dot it issued before, so the new write supersedes the
            # old one on every replica instead of being taken for it.
            reply = await _put(coordinator, key, b"second")
            assert reply[1] == coordinator.node_id
            client = cluster.client(timeout_s=5.0)
            assert (await client.get(key)).siblings == (b"second",)
            await asyncio.sleep(0.2)  # the third replica's copy lands too
            for node in cluster.nodes.values():
                (sibling,) = node.core.objects[key].siblings
                assert sibling.dot.node == old_dot.node and sibling.dot.counter > old_dot.counter

    asyncio.run(asyncio.wait_for(body(), 60))


class _RefusingSaves:
    """A store whose saves the disk refuses (reads and the counter mark still work)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def save(self, records: object) -> None:
        raise StorageError("the disk refused the save")


@pytest.mark.parametrize("kind", ["memory", "tcp"])
def test_a_put_whose_local_save_is_refused_fails_though_replicas_may_hold_it(
    kind: str, tmp_path: Path
) -> None:
    async def body() -> None:
        async with LocalCluster(
            **_N3_R2_W2,
            transport=kind,  # type: ignore[arg-type]
            data_dir=tmp_path,
            sync="always",
        ) as cluster:
            key = b"refused"
            coordinator = cluster.node(cluster.node("n1")._placement(key)[0])
            coordinator.store = _RefusingSaves(coordinator.store)  # type: ignore[assignment]
            with pytest.raises(StorageError):
                await _put(coordinator, key, b"v")
            assert key not in coordinator.core.objects  # memory went back to the store
            await asyncio.sleep(0.2)
            holders = [n for n in cluster.nodes.values() if key in n.core.objects]
            assert holders and coordinator not in holders  # as after a Timeout: it may land
            # The first put's early requests went out while the disk was still taken as
            # healthy; once a save failed, a put's requests wait for its save again.
            before = coordinator.counters["replica_writes_early"]
            with pytest.raises(StorageError):
                await _put(coordinator, b"refused-2", b"v")
            assert coordinator.counters["replica_writes_early"] == before

    asyncio.run(asyncio.wait_for(body(), 60))


@pytest.mark.parametrize("sync", ["never", None])
def test_without_an_fsync_to_overlap_replica_requests_wait_for_the_save(
    sync: str | None, tmp_path: Path
) -> None:
    """``sync=never`` (and a memory store): the turn's batch per peer is kept, no request
    goes ahead of the save."""

    async def body() -> None:
        async with LocalCluster(
            **_N3_R2_W2,
            transport="tcp",
            data_dir=None if sync is None else tmp_path,
            sync="never",
        ) as cluster:
            client = cluster.client(timeout_s=5.0)
            await asyncio.gather(*(client.put(b"k%d" % i, b"v") for i in range(20)))
            assert all(n.counters["replica_writes_early"] == 0 for n in cluster.nodes.values())

    asyncio.run(asyncio.wait_for(body(), 60))


class _SocketsFirst:
    """A store that notes, at each save, whether every frame the node had written to its
    peers' connections was already handed to the socket (nothing waits in a turn's write)."""

    def __init__(self, inner: ObjectStore, node: KVNode) -> None:
        self.inner = inner
        self.node = node
        self.checks: list[bool] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def save(self, records: object) -> None:
        outbound = self.node.transport._outbound  # type: ignore[attr-defined]
        self.checks.append(all(c._outgoing is None for c in outbound.values()))
        self.inner.save(records)  # type: ignore[arg-type]


def test_the_save_waits_for_replica_requests_sent_after_its_flush_was_queued(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        async with LocalCluster(**_N3_R2_W2, transport="tcp", data_dir=tmp_path) as cluster:
            client = cluster.client(timeout_s=5.0)
            await client.put(b"earlier", b"v")
            coordinator = cluster.node("n1")
            store = _SocketsFirst(coordinator.store, coordinator)
            coordinator.store = store  # type: ignore[assignment]
            # In one turn: a replica write dirties a key (the flush is queued), then a put
            # pushes its replica requests after that flush.
            again = PutReplica(0, b"earlier", coordinator.core.objects[b"earlier"])
            coordinator._run(coordinator.core.handle("n2", again))
            reply = await _put(coordinator, b"later", b"v")
            assert reply[1] == "n1"
            assert coordinator.counters["replica_writes_early"] == 2
            assert store.checks and all(store.checks)

    asyncio.run(asyncio.wait_for(body(), 60))
