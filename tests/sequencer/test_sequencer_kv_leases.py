"""Worker-id leases in a kv cluster: the pure rules, then LocalCluster runs in virtual time
with contention, a crashed holder, a partition and a lossy network."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.core.errors import (
    Conflict,
    Corruption,
    FailedPrecondition,
    InvalidArgument,
    Timeout,
    Unavailable,
)
from blocks.core.memory_network import LinkConfig
from blocks.kv import LocalCluster, MembershipConfig, NodeConfig, QuorumConfig
from blocks.sequencer.kvlease import KvLeaseConfig, KvLeases, KvWorkerLease
from blocks.sequencer.kvlease_core import (
    KvLeaseRecord,
    LeaseState,
    claimable,
    holds,
    resolve,
)
from blocks.sequencer.snowflake import Snowflake, decode
from blocks.testing import Simulation, nemesis_seeds, run_simulation

KV_CONFIG = NodeConfig(
    quorum=QuorumConfig(timeout_s=0.3),
    membership=MembershipConfig(suspect_after_s=0.5),
    gossip_interval_s=0.1,
    anti_entropy_interval_s=0.5,
)
LEASES = KvLeaseConfig(workers=4, ttl_ms=1000, safety_margin_ms=200)


def _cluster(sim: Simulation, nodes: int = 3) -> LocalCluster:
    return LocalCluster(
        nodes=nodes, network=sim.network, clock=sim.clock, seed=sim.seed, config=KV_CONFIG
    )


def _leases(cluster: LocalCluster, sim: Simulation, config: KvLeaseConfig = LEASES) -> KvLeases:
    client = cluster.client(timeout_s=0.5)
    return KvLeases(client, config, clock=sim.clock, rng=random.Random(sim.random.random()))


# -- the pure rules ---------------------------------------------------------------------------

records = st.builds(
    KvLeaseRecord,
    st.sampled_from([LeaseState.HELD, LeaseState.RELEASED]),
    st.sampled_from(["a", "b", "c"]),
    st.binary(min_size=16, max_size=16),
    st.integers(0, 50),
    st.integers(0, 10**13),
)


@given(st.lists(records, min_size=1, max_size=6), st.randoms())
def test_resolution_is_deterministic_and_never_names_a_holder(
    written: list[KvLeaseRecord], shuffler: random.Random
) -> None:
    siblings = [r.encode() for r in written] * 2
    view = resolve(siblings)
    shuffler.shuffle(siblings)
    assert resolve(siblings) == view
    distinct = set(written)
    assert view.conflicted == (len(distinct) > 1)
    assert view.record is not None
    if view.conflicted:
        assert view.record.state is LeaseState.CONTESTED
        assert view.record.epoch > max(r.epoch for r in written)
        assert view.record.until_ms == max(r.until_ms for r in written)
        assert not holds(view, [r.token for r in written])
        assert not claimable(view, 0.5, 1.0)
        assert claimable(view, 1.0, 1.0)
    else:
        assert view.record == written[0]
        assert KvLeaseRecord.decode(view.record.encode()) == view.record


def test_bad_records_and_configs_are_refused() -> None:
    for garbage in (
        b"",
        b"\x01",
        b"\x96\x01\xa4gone\xa1a\xc4\x00\x01\x02",
        b"\x96\x02\xa4held\xa1a\xc4\x00\x01\x02",
    ):
        with pytest.raises(Corruption):
            resolve([garbage])
    with pytest.raises(InvalidArgument):
        KvLeaseRecord(LeaseState.CONTESTED, "a", b"", 1, 1)
    with pytest.raises(InvalidArgument):
        KvLeaseRecord(LeaseState.HELD, "a", b"t", -1, 1)
    with pytest.raises(InvalidArgument):
        KvLeaseConfig(ttl_ms=1000, safety_margin_ms=600)
    with pytest.raises(InvalidArgument):
        KvLeaseConfig(workers=0)
    assert resolve([]).record is None and claimable(resolve([]), 0.0, 9.0)


# -- in a cluster -----------------------------------------------------------------------------


def test_owners_get_distinct_ids_renew_and_release() -> None:
    async def main(sim: Simulation) -> None:
        async with _cluster(sim) as cluster:
            leases = _leases(cluster, sim)
            held = [await leases.acquire(f"owner-{i}", timeout_s=1.0) for i in range(4)]
            assert sorted(lease.worker_id for lease in held) == [0, 1, 2, 3]
            assert await leases.try_acquire("owner-4") is None
            await asyncio.sleep(0.5)
            for lease in held:
                await leases.renew(lease)
                assert lease.held()
            await asyncio.sleep(0.7)  # past the first term: only the renewal keeps it
            assert all(lease.held() for lease in held)
            assert await leases.release(held[0], issued_below_ms=sim.clock.now_ms())
            assert not held[0].held()
            with pytest.raises(Conflict):
                await leases.renew(held[0])
            successor = await leases.try_acquire("owner-4")
            assert successor is not None and successor.worker_id == held[0].worker_id
            assert successor.epoch == held[0].epoch + 1
            assert successor.previous_expires_at_ms <= sim.clock.now_ms()

    run_simulation(main, 11)


def test_a_crashed_holder_is_replaced_only_after_its_lease_ran_out() -> None:
    async def main(sim: Simulation) -> None:
        async with _cluster(sim) as cluster:
            config = KvLeaseConfig(workers=1, ttl_ms=1000, safety_margin_ms=200)
            leases, contender = _leases(cluster, sim, config), _leases(cluster, sim, config)
            crashed = await leases.acquire("crashed")
            confirmed_at = sim.clock.monotonic()
            ids = Snowflake(0, clock=sim.clock, lease=crashed).next_ids(10)
            # the holder dies: it renews no more; the contender keeps trying
            successor = await contender.acquire("next", timeout_s=10.0)
            waited = sim.clock.monotonic() - confirmed_at
            assert waited >= config.takeover_after_s
            assert not crashed.held() and successor.held()
            assert successor.epoch == crashed.epoch + 1
            assert successor.previous_expires_at_ms == crashed.until_ms
            after = Snowflake(
                0,
                clock=sim.clock,
                lease=successor,
                min_timestamp_ms=successor.previous_expires_at_ms,
            ).next_ids(10)
            assert decode(after[0]).unix_ms > max(decode(i).unix_ms for i in ids)

    run_simulation(main, 12)


def test_a_partitioned_holder_stops_before_the_majority_side_takes_over() -> None:
    async def main(sim: Simulation) -> None:
        async with _cluster(sim) as cluster:
            config = KvLeaseConfig(workers=1, ttl_ms=1000, safety_margin_ms=200)
            left_client, right_client = cluster.client(timeout_s=0.5), cluster.client(timeout_s=0.5)
            left = KvLeases(left_client, config, clock=sim.clock)
            right = KvLeases(right_client, config, clock=sim.clock)
            lease = await left.acquire("left")
            cluster.network.partition(
                [["n1", left_client.transport.name], ["n2", "n3", right_client.transport.name]]
            )
            keeper = asyncio.create_task(left.keep(lease))
            generator = Snowflake(0, clock=sim.clock, lease=lease)
            issued = generator.next_ids(5)
            successor = await right.acquire("right", timeout_s=10.0)
            assert not lease.held(), "two holders of worker id 0"
            await asyncio.wait_for(keeper, 5.0)  # the keeper gave up on its own
            with pytest.raises(Exception, match="lease lost"):
                generator.next_id()
            cluster.network.heal()
            with pytest.raises(Conflict):
                await left.renew(lease)
            assert successor.held()
            assert successor.previous_expires_at_ms > max(decode(i).unix_ms for i in issued)

    run_simulation(main, 13)


def test_a_cluster_with_spare_nodes_is_refused_unless_declared_strict() -> None:
    async def main(sim: Simulation) -> None:
        async with _cluster(sim, nodes=4) as cluster:
            with pytest.raises(FailedPrecondition):
                await _leases(cluster, sim).acquire("a", timeout_s=1.0)
            declared = KvLeaseConfig(
                workers=4, ttl_ms=1000, safety_margin_ms=200, assume_strict_quorum=True
            )
            assert (await _leases(cluster, sim, declared).acquire("a")).held()

    run_simulation(main, 14)


async def _contend(
    name: str, leases: KvLeases, sim: Simulation, holding: dict[str, KvWorkerLease], stop: float
) -> list[int]:
    """Acquire, issue IDs while holding, then crash or release; repeat until ``stop``."""
    ids: list[int] = []
    draw = random.Random(f"{sim.seed}:{name}")
    round_number = 0
    while sim.clock.monotonic() < stop:
        round_number += 1
        try:
            lease = await leases.acquire(f"{name}.{round_number}", timeout_s=3.0)
        except Unavailable:
            continue
        holding[lease.owner] = lease
        keeper = asyncio.create_task(leases.keep(lease))
        generator = Snowflake(
            lease.worker_id,
            clock=sim.clock,
            lease=lease,
            min_timestamp_ms=lease.previous_expires_at_ms,
            backwards_wait_max_ms=10**7,
        )
        for _ in range(draw.randint(1, 30)):
            if not lease.held():
                break
            chunk, _ = generator.try_next_ids(3)
            ids.extend(chunk)
            await asyncio.sleep(draw.uniform(0.01, 0.2))
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        if draw.random() < 0.5:
            lease.mark_lost()  # a crash: no release, the id frees itself after the TTL
        else:
            try:
                await leases.release(lease)
            except (Unavailable, Timeout):
                lease.mark_lost()
        del holding[lease.owner]
    return ids


# Three seeds in a plain run (six before: 68 of the module's 80 s at load 9); each is 40 s of
# virtual time of six contenders handing two worker ids around. BLOCKS_SOAK_SEEDS=N runs N
# seeds from BLOCKS_SOAK_FIRST_SEED, BLOCKS_NEMESIS_SEED=S replays one (blocks.testing).
@pytest.mark.parametrize("seed", nemesis_seeds([21, 22, 23]))
def test_contenders_on_a_lossy_network_never_share_a_worker_id(seed: int) -> None:
    async def main(sim: Simulation) -> None:
        sim.network.set_default_link(
            LinkConfig(delay_ms=(0.5, 20.0), loss=0.05, duplicate=0.05, reorder=0.1)
        )
        async with _cluster(sim) as cluster:
            config = KvLeaseConfig(workers=2, ttl_ms=600, safety_margin_ms=120)
            holding: dict[str, KvWorkerLease] = {}
            stop = sim.clock.monotonic() + 40.0
            tasks = [
                asyncio.create_task(
                    _contend(f"c{i}", _leases(cluster, sim, config), sim, holding, stop)
                )
                for i in range(6)
            ]
            checks = 0
            try:
                while not all(task.done() for task in tasks):
                    live = [lease.worker_id for lease in holding.values() if lease.held()]
                    assert len(live) == len(set(live)), f"shared id at {sim.clock.monotonic()}"
                    checks += 1
                    await asyncio.sleep(0.005)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            ids = [i for task in tasks for i in task.result()]
            assert len(ids) == len(set(ids)) and len(ids) > 100, len(ids)
            assert checks > 1000

    run_simulation(main, seed)
