"""LocalCluster: durability through the node store, hinted handoff, read repair, join and
leave under writes, Bitcask data directories, TCP mode and bad input."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from blocks.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    PeerError,
    Timeout,
    Unauthenticated,
    Unavailable,
)
from blocks.core.memory_network import LinkConfig
from blocks.kv.client import KVClient
from blocks.kv.cluster.driver import NodeConfig
from blocks.kv.cluster.membership import MembershipConfig
from blocks.kv.cluster.node import QuorumConfig
from blocks.kv.local_cluster import LocalCluster
from blocks.testing import Simulation, run_simulation

CONFIG = NodeConfig(
    quorum=QuorumConfig(timeout_s=0.5),
    membership=MembershipConfig(suspect_after_s=0.5),
    gossip_interval_s=0.1,
    anti_entropy_interval_s=0.5,
)
QUIET = dataclasses.replace(CONFIG, anti_entropy_interval_s=1000.0)


def _cluster(sim: Simulation, config: NodeConfig = CONFIG, nodes: int = 3) -> LocalCluster:
    return LocalCluster(
        nodes=nodes, network=sim.network, clock=sim.clock, seed=sim.seed, config=config
    )


def _home(cluster: LocalCluster, key: bytes, n: int = 3) -> list[str]:
    return next(iter(cluster.nodes.values()))._ring.preference_list(key, n)


def test_an_acknowledged_write_survives_its_only_holder_crashing() -> None:
    async def main(sim: Simulation) -> None:
        async with _cluster(sim, QUIET) as cluster:
            client = cluster.client()
            home = _home(cluster, b"k")
            cluster.partition([[home[0]], home[1:]])  # the client is with home[0]
            await client.put(b"k", b"only-on-one", w=1)
            assert b"k" not in cluster.nodes[home[1]].core.objects
            await cluster.crash(home[0])
            await cluster.restart(home[0])
            cluster.heal()
            got = await client.get(b"k", r=3)
            assert got.value == b"only-on-one"

    run_simulation(main, 1)


def test_concurrent_writes_replicate_in_batches_and_every_replica_holds_them() -> None:
    async def main(sim: Simulation) -> None:
        async with _cluster(sim, QUIET) as cluster:
            client = cluster.client()
            keys = [b"batched-%d" % i for i in range(64)]
            await asyncio.gather(*(client.put(k, k + b"-value") for k in keys))
            await asyncio.sleep(0.2)  # the replicas past W have their copies too
            for node in cluster.nodes.values():
                assert all(node.core.objects[k].values == [k + b"-value"] for k in keys)
            batches = sum(n.counters["peer_batches"] for n in cluster.nodes.values())
            batched = sum(n.counters["peer_batched_messages"] for n in cluster.nodes.values())
            assert 0 < batches < batched  # several messages went as one, more than once

    run_simulation(main, 3)


def test_hinted_handoff_returns_a_write_to_its_owner() -> None:
    async def main(sim: Simulation) -> None:
        async with _cluster(sim, QUIET, nodes=4) as cluster:
            client = cluster.client()
            home = _home(cluster, b"k")
            await cluster.crash(home[2])
            await asyncio.sleep(1.0)  # the others notice
            await client.put(b"k", b"while-down")
            substitute = next(n for n in cluster.nodes if n not in home)
            assert cluster.nodes[substitute].core.hints.owners(b"k") == {home[2]}
            await cluster.restart(home[2])
            await asyncio.sleep(1.0)
            assert cluster.nodes[home[2]].core.objects[b"k"].values == [b"while-down"]
            assert b"k" not in cluster.nodes[substitute].core.objects
            assert not cluster.nodes[substitute].core.hints

    run_simulation(main, 2)


def test_read_repair_fixes_a_replica_that_missed_a_write() -> None:
    async def main(sim: Simulation) -> None:
        async with _cluster(sim, QUIET) as cluster:
            client = cluster.client()
            home = _home(cluster, b"k")
            cluster.partition([home[:2], [home[2]]])
            await client.put(b"k", b"v1")  # home[2] still looks healthy: W=2 from the others
            cluster.heal()
            assert b"k" not in cluster.nodes[home[2]].core.objects
            assert (await client.get(b"k", r=3)).value == b"v1"
            await asyncio.sleep(0.1)
            assert cluster.nodes[home[2]].core.objects[b"k"].values == [b"v1"]

    run_simulation(main, 3)


def test_nodes_join_and_leave_while_writes_continue() -> None:
    async def main(sim: Simulation) -> None:
        sim.network.set_default_link(LinkConfig(delay_ms=(0.5, 5.0)))
        async with _cluster(sim, nodes=4) as cluster:
            client = cluster.client()
            latest: dict[bytes, bytes] = {}
            stop = asyncio.Event()

            async def writer() -> None:
                step = 0
                while not stop.is_set():
                    key = b"key-%d" % (step % 40)
                    value = b"v%d" % step
                    await client.put(key, value)
                    latest[key] = value
                    step += 1
                    await asyncio.sleep(0.01)

            task = asyncio.create_task(writer())
            await asyncio.sleep(0.5)
            joined = await cluster.add_node()
            await asyncio.sleep(1.0)
            assert await cluster.remove_node("n1")
            await asyncio.sleep(1.0)
            stop.set()
            await task
            await asyncio.sleep(3.0)  # hand-offs and anti-entropy settle
            assert sorted(cluster.nodes) == sorted(["n2", "n3", "n4", joined])
            for key, value in latest.items():
                got = await client.get(key)
                assert value in got.siblings, (key, value, got)
                holders = {n for n, node in cluster.nodes.items() if key in node.core.objects}
                assert holders == set(_home(cluster, key)), key
            assert cluster.nodes[joined].core.objects

    run_simulation(main, 4)


def test_bitcask_data_dirs_keep_writes_across_crash_and_full_restart(tmp_path: Path) -> None:
    async def main() -> None:
        async with LocalCluster(nodes=3, data_dir=tmp_path, sync="always") as cluster:
            client = cluster.client()
            for i in range(30):
                await client.put(b"k%d" % i, b"v%d" % i)
            await cluster.crash("n2")
            await cluster.restart("n2")
            assert len(cluster.nodes["n2"].core.objects) == 30
        async with LocalCluster(nodes=3, data_dir=tmp_path) as again:
            client = again.client()
            for i in range(30):
                assert (await client.get(b"k%d" % i, r=3)).value == b"v%d" % i

    asyncio.run(main())


def test_tcp_cluster_serves_through_a_crash_and_checks_the_token() -> None:
    async def main() -> None:
        async with LocalCluster(nodes=3, transport="tcp", token="secret") as cluster:
            client = cluster.client()
            await client.put("user:1", b"alice")
            await cluster.crash("n1")
            assert (await client.get("user:1")).value == b"alice"
            await client.put("user:2", b"bob")
            await cluster.restart("n1")
            assert (await client.get("user:2", r=3)).value == b"bob"
            with pytest.raises(FailedPrecondition):
                cluster.partition([["n1"]])  # not on TCP
            from blocks.core.net import TcpTransport

            port = cluster._ports["n2"]
            wrong = TcpTransport("intruder", listen=None, peers={"n2": ("127.0.0.1", port)})
            try:
                with pytest.raises(Unauthenticated):
                    await wrong.request("n2", ["members"], 2.0)
            finally:
                await wrong.close()

    asyncio.run(main())


def test_bad_input_gets_a_typed_error_and_the_node_keeps_serving() -> None:
    async def main(sim: Simulation) -> None:
        async with _cluster(sim) as cluster:
            client = cluster.client()
            raw = sim.network.transport("raw")
            for bad_key in (5, None, b"k" * 70_000):
                with pytest.raises(InvalidArgument):
                    await client.put(bad_key, b"v")  # type: ignore[arg-type]
            with pytest.raises(InvalidArgument):
                await client.put(b"k", "text")  # type: ignore[arg-type]
            with pytest.raises(InvalidArgument):
                await client.put(b"k", b"v", w=4)
            with pytest.raises(InvalidArgument):
                await client.put(b"k", b"v", b"\xc1not-a-context")
            for request in (["bogus"], [], "put", {"a": 1}, ["put", b"k"], ["members", 1]):
                with pytest.raises(InvalidArgument):
                    await raw.request("n1", request, 1.0)
            bad = (
                [1, 1],
                [99],
                [1, -1, b"k", [[], []], None],
                [20, [["x"]], True],
                [9, [[2, 5], [2, -1]]],  # a batch with one bad message is refused whole
            )
            for message in bad:
                with pytest.raises(PeerError):
                    await raw.request("n1", message, 1.0)
            assert cluster.nodes["n1"].counters["malformed_peer_messages"] == 5
            await client.put(b"k", b"fine")
            assert (await client.get(b"k")).value == b"fine"
            with pytest.raises(InvalidArgument):
                KVClient(raw, [])

    run_simulation(main, 5)


def test_writes_fail_with_unavailable_when_too_few_replicas_are_up() -> None:
    async def main(sim: Simulation) -> None:
        async with _cluster(sim, QUIET) as cluster:
            client = cluster.client(timeout_s=1.0)
            await cluster.crash("n2")
            await cluster.crash("n3")
            await asyncio.sleep(1.0)
            with pytest.raises(Unavailable):
                await client.put(b"k", b"v")
            await client.put(b"k", b"v", w=1)
            assert (await client.get(b"k", r=1)).value == b"v"

    run_simulation(main, 6)


def test_tcp_calls_with_their_own_deadline_succeed_and_time_out() -> None:
    # The TCP listener runs a handler inline up to its first suspension, outside any task:
    # a per-call deadline must not need one (``asyncio.timeout`` does).
    async def main() -> None:
        async with LocalCluster(nodes=3, transport="tcp") as cluster:
            client = cluster.client()
            await client.put("user:1", b"alice", timeout_s=5.0)
            assert (await client.get("user:1", timeout_s=5.0)).value == b"alice"
            await cluster.crash("n2")
            await cluster.crash("n3")
            with pytest.raises((Timeout, Unavailable)):
                await client.put("user:1", b"bob", w=3, timeout_s=0.2)

    asyncio.run(main())


def test_a_local_read_with_nothing_unsaved_answers_without_a_loop_turn() -> None:
    async def main() -> None:
        async with LocalCluster(1, 1, 1, 1) as cluster:
            node = cluster.node("n1")
            await node.put(b"k", b"v1")
            read = node.get(b"k")
            with pytest.raises(StopIteration) as done:  # no suspension: answered at once
                read.send(None)
            assert done.value.value is not None and done.value.value.value == b"v1"
            # A write not yet saved: the read waits for the save that its answer depends on.
            write = asyncio.ensure_future(node.put(b"k", b"v2"))
            await asyncio.sleep(0)
            assert node.core.dirty or node.requests_in_flight
            waiting = asyncio.ensure_future(node.get(b"k"))
            assert (await write).obj.value == b"v2"
            got = await waiting
            assert got is not None and got.value == b"v2"
            assert node.requests_in_flight == 0

    asyncio.run(main())
