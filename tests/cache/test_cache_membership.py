"""Cache membership (pure): merge order, failure detection, refutation, leave, views, purge."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.cache.gossip import GossipNode
from blocks.cache.local import PolicyCache
from blocks.cache.lru import LruPolicy
from blocks.cache.membership import (
    MEMBERS_MAX,
    Member,
    MemberTable,
    StaleView,
    Status,
    View,
    supersedes,
)
from blocks.core.clock import ManualClock
from blocks.core.errors import InvalidArgument

NAMES = ["a", "b", "c", "d"]

# A node writes one record per (incarnation, status, heartbeat) and keeps its address, so
# records of one node that rank alike are the same record.
records = st.builds(
    lambda name, incarnation, status, heartbeat: Member(
        name, f"10.0.0.1:{ord(name)}", incarnation, status, heartbeat
    ),
    st.sampled_from(NAMES),
    st.integers(1, 4),
    st.sampled_from(list(Status)),
    st.integers(0, 4),
)


def _table(name: str = "me", clock: ManualClock | None = None) -> MemberTable:
    return MemberTable(name, f"{name}:1", clock or ManualClock())


def _others(table: MemberTable) -> dict[str, Member]:
    return {m.name: m for m in table.records() if m.name != table.name}


@settings(max_examples=200, deadline=None)
@given(st.lists(records, max_size=12), st.randoms(use_true_random=False))
def test_merging_in_any_order_ends_in_the_same_table(batch: list[Member], rng) -> None:  # type: ignore[no-untyped-def]
    first, second = _table(), _table()
    for record in batch:
        first.merge([record])
    shuffled = list(batch)
    rng.shuffle(shuffled)
    second.merge(shuffled)
    second.merge(shuffled)  # idempotent
    assert _others(first) == _others(second)


@given(records, records)
def test_supersedes_is_a_strict_order_on_one_nodes_records(x: Member, y: Member) -> None:
    assert not (supersedes(x, y) and supersedes(y, x))
    if x.rank() != y.rank():
        assert supersedes(x, y) or supersedes(y, x)


def test_a_silent_member_is_declared_dead_then_forgotten() -> None:
    clock = ManualClock()
    table = MemberTable("me", "me:1", clock, dead_after_ms=100, forget_after_ms=1_000)
    assert table.merge([Member("b", "b:1", 5, Status.ALIVE, 1)])
    assert table.view().names == ["b", "me"]
    clock.advance(ms=50)
    table.merge([Member("b", "b:1", 5, Status.ALIVE, 2)])  # a rising heartbeat is life
    clock.advance(ms=90)
    table.tick()
    assert table.member("b").status is Status.ALIVE  # type: ignore[union-attr]
    clock.advance(ms=20)
    table.tick()
    assert table.member("b").status is Status.DEAD  # type: ignore[union-attr]
    assert table.view().names == ["me"]
    clock.advance(ms=1_001)
    table.tick()
    assert table.member("b") is None


def test_a_node_refutes_a_rumour_of_its_death() -> None:
    table = _table("me")
    me = table.me
    assert not table.merge([Member("me", me.address, me.incarnation, Status.DEAD, 9)])
    assert table.me.status is Status.ALIVE
    assert table.me.incarnation == me.incarnation + 1
    assert table.refutations == 1
    # the refutation supersedes the rumour wherever both meet
    other = _table("other")
    other.merge([Member("me", me.address, me.incarnation, Status.DEAD, 9)])
    other.merge(table.records())
    assert other.member("me").status is Status.ALIVE  # type: ignore[union-attr]


def test_a_restarted_node_supersedes_its_previous_life() -> None:
    clock = ManualClock()
    before = MemberTable("n", "n:1", clock)
    observer = _table("o", clock)
    observer.merge(before.records())
    observer.merge([Member("n", "n:1", before.me.incarnation, Status.DEAD, 0)])
    clock.advance(ms=10)
    after = MemberTable("n", "n:1", clock)  # same name, a later life
    observer.merge(after.records())
    assert observer.member("n").status is Status.ALIVE  # type: ignore[union-attr]


def test_leave_is_final_and_leaves_the_view() -> None:
    table, other = _table("me"), _table("other")
    other.merge(table.records())
    assert "me" in other.view().names
    table.leave()
    table.merge([Member("me", "me:1", table.me.incarnation + 5, Status.DEAD, 0)])
    assert table.me.status is Status.LEFT  # no refutation after leaving
    assert other.merge(table.records())
    assert other.view().names == ["other"]


def test_departed_nodes_are_learned_out_of_the_view_and_bounds_hold() -> None:
    table = _table()
    assert not table.merge([Member("gone", "gone:1", 3, Status.LEFT, 1)])
    assert table.member("gone").status is Status.LEFT  # type: ignore[union-attr]
    assert not table.merge([Member("gone", "gone:1", 3, Status.ALIVE, 9)])  # older news
    assert table.view().names == ["me"]
    too_many = [Member(f"n{i}", f"n{i}:1", 1, Status.ALIVE, 0) for i in range(MEMBERS_MAX + 1)]
    with pytest.raises(InvalidArgument):
        table.merge(too_many)
    with pytest.raises(InvalidArgument):
        table.merge([Member("", "x:1", 1, Status.ALIVE, 0)])
    assert sorted(m.name for m in table.records()) == ["gone", "me"]


def test_equal_views_place_keys_alike_and_a_join_moves_about_a_share() -> None:
    three = View.of([("a", "a:1"), ("b", "b:1"), ("c", "c:1")])
    assert three == View.of(reversed(three.members))
    four = View.of([*three.members, ("d", "d:1")])
    assert four.view_id != three.view_id
    keys = [f"k{i}" for i in range(4_000)]
    before, after = three.ring(), four.ring()
    moved = [k for k in keys if before.owner(k) != after.owner(k)]
    assert {after.owner(k) for k in moved} == {"d"}  # only onto the new node
    assert 0.15 < len(moved) / len(keys) < 0.35  # ~1/4


def test_a_view_change_purges_what_the_node_no_longer_holds_and_checks_views() -> None:
    clock = ManualClock()
    table = MemberTable("a", "a:1", clock)
    cache: PolicyCache[str, bytes] = PolicyCache(LruPolicy(10_000), clock=clock)
    node = GossipNode(table, cache)
    keys = [f"k{i}" for i in range(2_000)]
    for key in keys:
        cache.put(key, b"v")
    node.receive([Member("b", "b:1", 1, Status.ALIVE, 0)])
    view = table.view()
    ring = view.ring()
    kept = set(cache.snapshot_keys())
    assert kept == {k for k in keys if ring.owner(k) == "a"}
    assert all(table.keeps(k) == (k in kept) for k in keys[:50])
    assert 0 < len(kept) < len(keys) and node.purged == len(keys) - len(kept)
    node.check_view(view.view_id)
    node.check_view(0)
    with pytest.raises(StaleView):
        node.check_view(view.view_id + 1)


def test_leaving_refuses_every_call_and_tells_the_peers() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        cache: PolicyCache[str, bytes] = PolicyCache(LruPolicy(10), clock=clock)
        node = GossipNode(MemberTable("a", "a:1", clock), cache, leave_drain_s=0)
        told: list[str] = []

        async def exchange(address: str) -> bool:
            told.append(address)
            return True

        node._exchange = exchange  # type: ignore[method-assign]
        node.receive([Member("b", "b:1", 1, Status.ALIVE, 0)])
        await node.start()
        await node.leave()
        assert told.count("b:1") >= 1
        with pytest.raises(StaleView):
            node.check_view(0)
        await node.stop()

    asyncio.run(scenario())


def test_gossip_converges_a_cluster_in_memory() -> None:
    """Tables that gossip in rounds converge on one view (random peers, no network)."""
    clock = ManualClock()
    tables = [MemberTable(n, f"{n}:1", clock) for n in NAMES]
    tables[0].merge(tables[1].records())  # everyone else knows only its seed
    for table in tables[1:]:
        table.merge(tables[0].records())
    for _, (x, y) in zip(range(40), itertools.cycle(itertools.combinations(tables, 2))):
        x.tick()
        y.merge(x.records())
        x.merge(y.records())
    views = {t.view().view_id for t in tables}
    assert len(views) == 1 and tables[0].view().names == NAMES
