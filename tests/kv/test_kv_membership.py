"""Membership by gossip: convergence, failure detection, join and leave, ring transfer."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.core.clock import ManualClock
from blocks.core.errors import InvalidArgument, PeerError
from blocks.core.hashing import HashRing
from blocks.kv.cluster.membership import (
    MemberRecord,
    Membership,
    MembershipConfig,
    MemberStatus,
    record_from_wire,
    record_to_wire,
)
from blocks.kv.cluster.messages import Handoff, HandoffAck, PutAck, PutReplica
from blocks.kv.cluster.node import KVNodeCore, QuorumConfig
from blocks.kv.cluster.versions import VersionVector, update

CONFIG = MembershipConfig(fanout=2, suspect_after_s=1.0)


class Cluster:
    """Membership cores exchanging gossip through a lossy, seeded in-memory queue."""

    def __init__(self, names: list[str], seed: int, loss: float = 0.0) -> None:
        self.clock = ManualClock()
        self.rng = random.Random(seed)
        self.loss = loss
        self.paused: set[str] = set()
        # Each node knows only the first node as a seed: joining by gossip.
        self.views = {
            name: Membership(
                name,
                clock=self.clock,
                rng=random.Random(f"{seed}:{name}"),
                generation=1,
                seeds={names[0]: ""} if name != names[0] else {},
                config=CONFIG,
            )
            for name in names
        }

    def round(self) -> None:
        self.clock.advance(0.2)
        for name, view in sorted(self.views.items()):
            if name in self.paused:
                continue
            for peer, table in view.tick().messages:
                if peer in self.paused or peer not in self.views or self.rng.random() < self.loss:
                    continue
                answer = self.views[peer].handle_gossip(name, table, reply_wanted=True)
                if self.rng.random() >= self.loss:  # push-pull: the answer
                    for to, answered in answer.messages:
                        assert to == name
                        view.handle_gossip(peer, answered)

    def rings(self) -> set[tuple[str, ...]]:
        return {tuple(v.ring_members()) for n, v in self.views.items() if n not in self.paused}


@pytest.mark.parametrize("seed", range(10))
def test_gossip_converges_from_a_single_seed_despite_loss(seed: int) -> None:
    names = [f"n{i}" for i in range(12)]
    cluster = Cluster(names, seed, loss=0.2)
    for _ in range(40):
        cluster.round()
    assert cluster.rings() == {tuple(sorted(names))}, seed
    for view in cluster.views.values():
        assert view.healthy() == set(names), (seed, view.node_id)


def test_a_silent_node_becomes_unhealthy_but_stays_in_the_ring_then_recovers() -> None:
    names = ["a", "b", "c", "d"]
    cluster = Cluster(names, 1)
    for _ in range(10):
        cluster.round()
    cluster.paused.add("c")
    for _ in range(3):  # 0.6 s: within suspect_after_s, still healthy
        cluster.round()
    assert all("c" in cluster.views[n].healthy() for n in ("a", "b", "d"))
    for _ in range(5):  # past 1 s of silence
        cluster.round()
    for name in ("a", "b", "d"):
        assert "c" not in cluster.views[name].healthy()
        assert "c" in cluster.views[name].ring_members()
    cluster.paused.clear()
    for _ in range(5):
        cluster.round()
    assert all("c" in v.healthy() for v in cluster.views.values())


def test_leave_spreads_and_stale_gossip_does_not_resurrect_the_node() -> None:
    names = ["a", "b", "c", "d"]
    cluster = Cluster(names, 2)
    for _ in range(10):
        cluster.round()
    stale = cluster.views["a"].table()  # still shows d alive
    cluster.views["d"].leave()
    for _ in range(10):
        cluster.round()
    assert cluster.rings() == {("a", "b", "c")}
    cluster.views["b"].handle_gossip("a", stale)
    assert cluster.views["b"].ring_members() == ["a", "b", "c"]
    # A restart with a newer generation rejoins.
    cluster.views["d"] = Membership(
        "d", clock=cluster.clock, rng=random.Random(9), generation=2, seeds={"a": ""}
    )
    for _ in range(10):
        cluster.round()
    assert cluster.rings() == {tuple(names)}


def test_a_node_defends_itself_against_an_old_removal() -> None:
    clock = ManualClock()
    view = Membership("a", clock=clock, rng=random.Random(0), generation=5)
    claim = MemberRecord("a", "", 5, 99, MemberStatus.LEFT)
    assert view.handle_gossip("b", [claim]).replies == (False,)
    assert view.me.status is MemberStatus.ALIVE and view.me.heartbeat == 100
    ring_version = view.ring_version
    with pytest.raises(InvalidArgument):
        view.remove("unknown")
    assert view.ring_version == ring_version


def test_operator_remove_takes_a_dead_node_out_of_the_ring() -> None:
    clock = ManualClock()
    view = Membership("a", clock=clock, rng=random.Random(0), seeds={"b": "", "c": ""})
    assert view.ring_members() == ["a", "b", "c"]
    assert view.healthy() == {"a"}  # never heard from the seeds yet
    view.remove("c")
    assert view.ring_members() == ["a", "b"] and view.ring_version == 1


def test_records_are_bounded() -> None:
    clock = ManualClock()
    config = MembershipConfig(members_max=3)
    view = Membership("a", clock=clock, rng=random.Random(0), config=config)
    view.handle_gossip("b", [MemberRecord(f"x{i}", "", 1, 1) for i in range(5)])
    assert len(view.records) == 3 and view.dropped_records == 3


names_strategy = st.text(alphabet="abcxyz0", min_size=1, max_size=8)


@given(
    st.builds(
        MemberRecord,
        names_strategy,
        st.text(max_size=20),
        st.integers(0, 2**40),
        st.integers(0, 2**40),
        st.sampled_from(MemberStatus),
    )
)
def test_records_round_trip_the_wire(record: MemberRecord) -> None:
    assert record_from_wire(record_to_wire(record)) == record


@pytest.mark.parametrize(
    "raw",
    [
        None,
        [],
        ["a", "", 1, 1],
        ["a", "", 1, 1, "no"],
        ["", "", 1, 1, False],
        ["a", 3, 1, 1, True],
        ["a", "", -1, 1, False],
        ["a", "", 1.0, 1, False],
        ["a" * 300, "", 1, 1, False],
    ],
)
def test_malformed_records_are_peer_errors(raw: object) -> None:
    with pytest.raises(PeerError):
        record_from_wire(raw)


# -- ranges move to their new owners -----------------------------------------------------------


def _core(name: str, ring: list[HashRing], clock: ManualClock) -> KVNodeCore:
    return KVNodeCore(
        name, QuorumConfig(), lambda k: ring[0].preference_list(k, min(4, len(ring[0]))), clock
    )


def test_rebalance_hands_keys_to_new_owners_and_drops_copies_it_no_longer_owns() -> None:
    clock = ManualClock()
    ring = [HashRing(["a", "b", "c"], vnodes=16)]
    cores = {n: _core(n, ring, clock) for n in ("a", "b", "c", "d")}
    keys = [b"key-%d" % i for i in range(200)]
    for key in keys:  # every key on its three home nodes
        obj = update(None, VersionVector(), "a", key, cores["a"].hlc.now())
        for name in ring[0].preference_list(key, 3):
            cores[name].objects[key] = obj
    old = ring[0]
    ring[0] = HashRing(["a", "b", "c", "d"], vnodes=16)
    for name in ("a", "b", "c"):
        cores[name].rebalance(lambda k: old.preference_list(k, 3))
    healthy = {"a", "b", "c", "d"}
    for _ in range(10):  # deliver hand-offs and their acks
        for name in ("a", "b", "c"):
            for to, message in cores[name].tick(healthy).messages:
                assert isinstance(message, Handoff)
                for _, reply in cores[to].handle(name, message).messages:
                    assert isinstance(reply, HandoffAck)
                    cores[name].handle(to, reply)
    for key in keys:
        home = set(ring[0].preference_list(key, 3))
        holders = {n for n, core in cores.items() if key in core.objects}
        assert holders == home, key
    assert not any(core.hints for core in cores.values())
    assert 0 < len(cores["d"].objects) < len(keys)


def test_a_replica_write_from_a_stale_ring_reaches_the_home_nodes_and_leaves() -> None:
    """After a ring change, a coordinator that has not heard of it yet replicates a write to
    a node that is no longer home for the key: that node passes the copy on and drops it."""
    clock = ManualClock()
    ring = [HashRing(["a", "b", "c", "d"], vnodes=16)]
    cores = {n: _core(n, ring, clock) for n in ("a", "b", "c", "d")}
    old = HashRing(["a", "b", "c"], vnodes=16)
    key = next(
        k for k in (b"key-%d" % i for i in range(100)) if "d" in ring[0].preference_list(k, 3)
    )
    stray = next(n for n in old.preference_list(key, 3) if n not in ring[0].preference_list(key, 3))
    obj = update(None, VersionVector(), "a", key, cores["a"].hlc.now())
    replies = cores[stray].handle("a", PutReplica(7, key, obj))
    assert list(replies.messages) == [("a", PutAck(7))]  # acked as usual
    assert {owner for owner, _ in cores[stray].hints} == set(ring[0].preference_list(key, 3))
    healthy = {"a", "b", "c", "d"}
    for _ in range(3):
        for to, message in cores[stray].tick(healthy).messages:
            assert isinstance(message, Handoff)
            for _, reply in cores[to].handle(stray, message).messages:
                cores[stray].handle(to, reply)
    holders = {n for n, core in cores.items() if key in core.objects}
    assert holders == set(ring[0].preference_list(key, 3))
    assert not any(core.hints for core in cores.values())


def test_a_lone_member_is_healthy_until_it_leaves() -> None:
    clock = ManualClock()
    view = Membership("a", clock=clock, rng=random.Random(0))
    assert view.healthy() == {"a"}
    clock.advance(3600.0)  # nobody to hear from: time alone changes nothing
    assert view.healthy() == {"a"}
    view.leave()
    assert view.healthy() == set()


def test_gossip_answers_in_a_ready_the_table_when_asked_and_whether_the_ring_changed() -> None:
    clock = ManualClock()
    view = Membership("a", clock=clock, rng=random.Random(0), generation=5)
    newcomer = MemberRecord("c", "", 7, 1)
    ready = view.handle_gossip("b", [newcomer], reply_wanted=True)
    assert ready.replies == (True,) and not ready.records  # nothing to persist
    assert ready.messages == [("b", view.table())]  # the table with the newcomer merged
    assert "c" in view.ring_members()
    again = view.handle_gossip("b", [newcomer])  # nothing new, no answer asked for
    assert again.replies == (False,) and not again.messages
