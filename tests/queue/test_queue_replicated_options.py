"""A replicated queue node under ``fsync="never"`` with ``sync_interval_ms``: a call is answered
once written on a majority and the log is fsynced on a timer (the durability NATS
JetStream's default has); the default, fsynced on a majority before the answer, is not
touched."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from blocks.cli import main
from blocks.core.clock import SystemClock
from blocks.core.errors import InvalidArgument
from blocks.core.memory_network import MemoryNetwork
from blocks.pubsub.replication import ReplicationConfig
from blocks.queue.replicated import KEY, ReplicatedQueue

QUEUE_NODES = ["q1", "q2", "q3"]
TIMING = ReplicationConfig(election_timeout_ms=5_000, lag_max_ms=10_000)


def cluster(
    network: MemoryNetwork,
    directory: Path | None = None,
    timing: ReplicationConfig = TIMING,
    **options: Any,
) -> list[ReplicatedQueue]:
    return [
        ReplicatedQueue(
            None if directory is None else directory / name,
            network.transport(name),
            QUEUE_NODES,
            clock=SystemClock(),
            rng=random.Random(name),
            replication=timing,
            **options,
        )
        for name in QUEUE_NODES
    ]


async def close_all(nodes: list[ReplicatedQueue]) -> None:
    for node in nodes:
        await node.close()
        await node.log.transport.close()


def test_sync_interval_fsyncs_the_log_of_a_never_node(tmp_path: Path) -> None:
    """Under ``fsync="never"`` nothing fsyncs the log; with ``sync_interval_ms`` a timer does,
    and a clean close syncs what is left. Every acknowledged send is there after a restart."""

    async def run() -> None:
        network = MemoryNetwork(seed=9)
        plain = cluster(network, tmp_path / "plain", fsync="never")
        timed = cluster(MemoryNetwork(seed=9), tmp_path / "timed", fsync="never",
                        sync_interval_ms=20)  # fmt: skip
        for node in (*plain, *timed):
            await node.open()
        try:
            for nodes in (plain, timed):
                await nodes[0].create_queue("jobs")
                for index in range(10):
                    await nodes[0].send("jobs", b"%d" % index)
            await asyncio.sleep(0.3)
            for node in plain:
                assert node.interval_syncs == 0
                assert node.log.topics.store(*KEY).log.stats().fsyncs == 0
            for node in timed:
                assert node.interval_syncs > 0
                assert node.log.topics.store(*KEY).log.stats().fsyncs > 0
        finally:
            await close_all(plain)
            await close_all(timed)
        # Restarted, the nodes elect a leader before anything is read: a short election
        # timeout (0.5-1 s, not 5-10 s) that nothing else in this phase could trip.
        quick = ReplicationConfig(election_timeout_ms=500, lag_max_ms=10_000)
        again = cluster(MemoryNetwork(seed=10), tmp_path / "timed", quick, fsync="never")
        for node in again:
            await node.open()
        try:
            leader = again[0]
            for _ in range(500):
                if any(n.is_leader for n in again):
                    leader = next(n for n in again if n.is_leader)
                    if leader.machine.applied > 0:
                        break
                await asyncio.sleep(0.02)
            found = await leader.receive("jobs", max_messages=10, wait_ms=5_000)
            assert sorted(m.body for m in found) == [b"%d" % i for i in range(10)]
        finally:
            await close_all(again)

    asyncio.run(run())


def test_sync_interval_is_refused_with_an_fsync_policy_that_syncs() -> None:
    network = MemoryNetwork(seed=3)
    for fsync, interval in (("always", 100), ("batch", 100), ("never", 0), ("never", 10**9)):
        with pytest.raises(InvalidArgument):
            ReplicatedQueue(
                None,
                network.transport("q1"),
                QUEUE_NODES,
                fsync=fsync,  # type: ignore[arg-type]
                sync_interval_ms=interval,
            )


def test_the_cli_takes_sync_interval_only_for_a_never_cluster_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # In process: the refusal comes before any server starts, and a ``python -m blocks``
    # subprocess spent seconds importing for it.
    argv = ["queue", "serve", "--listen", "127.0.0.1:0"]
    argv += ["--data-dir", str(tmp_path), "--sync-interval-ms", "1000"]
    assert main(argv) != 0
    assert "--sync-interval-ms" in capsys.readouterr().err


def test_nodes_apply_the_records_they_wrote_without_reading_them_back(tmp_path: Path) -> None:
    """Leader and followers apply what they just stored from the records they stored (the
    log broker keeps them), not by reading and decoding them from the log again; the state
    is the same on every node (a restarted node replays from its log as before:
    ``test_queue_replicated.py``). Fails if the apply reads back the records just written."""

    async def run() -> None:
        nodes = cluster(MemoryNetwork(seed=13), tmp_path, fsync="never")
        for node in nodes:
            await node.open()
        try:
            await nodes[0].create_queue("jobs")
            leader = next(n for n in nodes if n.is_leader)
            reads: list[int] = []
            for node in nodes:
                store = node.log.topics.store(*KEY)
                original = store.read

                def counting(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                    reads.append(args[0])
                    return _original(*args, **kwargs)

                if node is not leader:  # a leader also reads to answer its followers' fetches
                    store.read = counting  # type: ignore[method-assign]
            sent = [await leader.send("jobs", b"%d" % i) for i in range(20)]
            (first,) = await leader.receive("jobs")
            await leader.ack("jobs", first.receipt)
            for _ in range(300):
                if all(n.machine.applied == leader.machine.applied for n in nodes):
                    break
                await asyncio.sleep(0.01)
            assert reads == [], reads
            snapshots = [node.machine.snapshot() for node in nodes]
            assert snapshots[0] == snapshots[1] == snapshots[2]
            assert first.id == sent[0]
        finally:
            await close_all(nodes)

    asyncio.run(run())


def test_followers_fsync_inline_and_the_leader_answers_fetches_from_its_newest_batch(
    tmp_path: Path,
) -> None:
    """Under the default durability a follower fsyncs what it fetched on its loop (its
    group commit never runs a round, yet its log is durable to its end), and the leader
    answers its followers' fetches of the batch it wrote last from that batch, not by
    reading the log. Sends go one at a time, each once both followers hold the last, so
    every fetch asks for exactly the newest batch. Fails with the fsync in the group
    commit's thread, or with the leader reading its log for those fetches."""

    async def run() -> None:
        nodes = cluster(MemoryNetwork(seed=17), tmp_path, fsync="always")
        for node in nodes:
            await node.open()
        try:
            await nodes[0].create_queue("jobs")
            leader = next(n for n in nodes if n.is_leader)
            followers = [n for n in nodes if n is not leader]
            stores = {n.node: n.log.topics.store(*KEY) for n in nodes}

            async def followers_hold_all() -> None:
                end = stores[leader.node].next_offset
                for _ in range(500):
                    if all(stores[f.node].next_offset == end for f in followers):
                        return
                    await asyncio.sleep(0.01)
                raise AssertionError("the followers did not catch up")

            await followers_hold_all()
            reads: list[int] = []
            original = stores[leader.node].read

            def counting(*args: Any, **kwargs: Any) -> Any:
                reads.append(args[0])
                return original(*args, **kwargs)

            stores[leader.node].read = counting  # type: ignore[method-assign]
            for i in range(10):
                await leader.send("jobs", b"%d" % i)
                await followers_hold_all()
            assert reads == [], reads
            for follower in followers:
                log = stores[follower.node].log  # type: ignore[attr-defined]
                assert log.commit_group.fsync_rounds == 0
                assert log.durable_offset == log.next_offset
            assert stores[leader.node].log.commit_group.fsync_rounds > 0  # type: ignore[attr-defined]
        finally:
            await close_all(nodes)

    asyncio.run(run())


def test_a_frame_of_calls_is_one_log_record_with_an_outcome_per_call() -> None:
    """The calls of one ``run_many`` travel as one record (one log frame, one fetch row)
    and are applied in order, each with its own outcome (a refused call among them refuses
    only itself); every node ends in the same state. Fails with a record per call."""

    async def run() -> None:
        nodes = cluster(MemoryNetwork(seed=21))
        for node in nodes:
            await node.open()
        try:
            await nodes[0].create_queue("jobs")
            leader = next(n for n in nodes if n.is_leader)
            store = leader.log.topics.store(*KEY)
            before = store.next_offset
            calls = [
                ["send", "jobs", b"a", 0, None, None, 0],
                ["send", "missing", b"x", 0, None, None, 0],
                ["send", "jobs", b"b", 0, None, None, 0],
                ["receive", "jobs", 2, None],
            ]
            (ok_a, id_a), (ok_x, error), (ok_b, id_b), (ok_r, got) = await leader.run_many(calls)
            assert store.next_offset == before + 1
            assert ok_a and ok_b and ok_r and not ok_x
            assert type(error).__name__ == "NotFound"
            assert [m.id for m in got] == [id_a, id_b]
            for _ in range(300):
                if all(n.machine.applied == leader.machine.applied for n in nodes):
                    break
                await asyncio.sleep(0.01)
            snapshots = [node.machine.snapshot() for node in nodes]
            assert snapshots[0] == snapshots[1] == snapshots[2]
        finally:
            await close_all(nodes)

    asyncio.run(run())


def test_a_batch_record_applies_as_its_commands_one_by_one() -> None:
    """Applying ``encode_batch(commands)`` leaves the broker as applying each command in its
    own record does, with the same outcomes; a value that is no record applies nothing."""
    from blocks.queue.machine import QueueMachine, encode_batch, encode_record

    commands: list[list[Any]] = [
        ["create", 1_000, {"name": "jobs", "visibility_ms": 50}],
        ["send", 1_001, "jobs", b"a", 0, None, None, 0],
        ["send", 1_001, "nowhere", b"x", 0, None, None, 0],
        ["send", 1_002, "jobs", b"b", 10, None, "d1", 3],
        ["receive", 1_020, "jobs", 5, None],
        ["send", 1_021, "jobs", b"c", 0, None, "d1", 0],
        "not a command",
        ["receive", 1_100, "jobs", 5, 30],
    ]
    one_by_one = QueueMachine()
    singles = [one_by_one.apply(i, encode_record("n", c))[2] for i, c in enumerate(commands)]
    batched = QueueMachine()
    origin, applied = batched.apply_record(0, encode_batch("n", commands))
    assert origin == "n" and [c for c, _ in applied] == commands

    def same(outcome: Any) -> Any:  # refusals compared by kind (a lone malformed command
        ok, result = outcome  # is refused by the record's decoder, in a batch by the broker)
        return (ok, repr(result) if ok else type(result).__name__)

    assert [same(o) for _, o in applied] == [same(o) for o in singles]
    assert batched.broker.snapshot() == one_by_one.broker.snapshot()
    assert batched.apply_record(1, b"\x01") == ("", [])
