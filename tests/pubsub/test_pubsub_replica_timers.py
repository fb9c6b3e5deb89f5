"""The replica core asks for its timers through ``Ready.timers``: a follower's or candidate's
step returns its election deadline whenever it moved, a leader's never; a leader asks for its
next check (``LEADER_TIMER``) exactly when it falls due; and replicas ticked only when their
timers fall due (no interval ticks) still elect a leader."""

from __future__ import annotations

import heapq
import random
from typing import Any

from blocks.pubsub.election import ELECTION_TIMER
from blocks.pubsub.replica import LEADER_TIMER, PartitionReplica, ReplicaConfig, Role
from blocks.pubsub.replica_messages import (
    BeginEpoch,
    FetchRequest,
    Message,
    ReplicaReady,
    VoteReply,
    VoteRequest,
)

NODES = ("a", "b", "c")
TIMEOUT_MS = 100


def replica(node: str, seed: int = 0) -> PartitionReplica:
    config = ReplicaConfig(node, NODES, election_timeout_ms=TIMEOUT_MS, lag_max_ms=200)
    return PartitionReplica(config, random.Random(f"{node}{seed}"), 0, epoch=1, epochs=[(1, 0)])


def election_due(ready: ReplicaReady[Any], timer: str = ELECTION_TIMER) -> int | None:
    """The deadline of ``timer`` that ``ready`` asks for, or None."""
    due = [due_ms for name, due_ms in ready.timers if name == timer]
    assert len(due) <= 1
    return due[0] if due else None


def test_a_follower_asks_for_its_deadline_once_and_again_when_it_moves() -> None:
    b = replica("b")
    first = election_due(b.tick(0))
    assert first is not None and TIMEOUT_MS <= first < 2 * TIMEOUT_MS
    assert election_due(b.tick(1)) is None  # not moved: not asked again
    assert not b.tick(first - 1).messages  # before the deadline nothing happens
    heard = b.handle_begin_epoch("a", BeginEpoch(1, "a"), 50)  # a leader resets the deadline
    moved = election_due(heard)
    assert moved is not None and 50 + TIMEOUT_MS <= moved < 50 + 2 * TIMEOUT_MS
    assert not b.tick(moved - 1).messages
    out = b.tick(moved)  # due: a pre-vote, and the next deadline
    assert b.role is Role.PRE_CANDIDATE
    assert {m[0] for m in out.messages} == {"a", "c"}
    assert all(isinstance(m, VoteRequest) and m.pre for _, m in out.messages)
    again = election_due(out)
    assert again is not None and again > moved


def test_a_leader_asks_for_no_election_timer() -> None:
    config = ReplicaConfig("a", NODES, election_timeout_ms=TIMEOUT_MS, lag_max_ms=200)
    leader = PartitionReplica.created(config, random.Random("a"), 0)
    assert leader.role is Role.LEADER
    assert election_due(leader.tick(0)) is None
    assert election_due(leader.tick(2 * TIMEOUT_MS)) is None
    # Unheard by a majority for longer than two timeouts, it steps down: now it has a deadline.
    stepped_down = leader.tick(10_000)
    assert leader.describe()["role"] == Role.FOLLOWER.value
    due = election_due(stepped_down)
    assert due is not None and 10_000 + TIMEOUT_MS <= due < 10_000 + 2 * TIMEOUT_MS


def test_a_leader_asks_for_its_next_check_when_it_falls_due() -> None:
    """Announcements: ``announce_interval_ms`` (250) after the later of the last fetch and the
    last announcement; a follower joining the ISR brings its lag check (``lag_max_ms``)
    forward; a fetch that only moves a check later asks for nothing (the tick re-asks)."""
    config = ReplicaConfig("a", NODES, election_timeout_ms=1_000, lag_max_ms=100)
    leader = PartitionReplica.created(config, random.Random("a"), 0)
    assert election_due(leader.resume(0), LEADER_TIMER) == 1  # followers never announced to
    announced = leader.tick(1)
    assert {d for d, m in announced.messages if isinstance(m, BeginEpoch)} == {"b", "c"}
    assert election_due(announced, LEADER_TIMER) == 1 + 250 + 1
    joined = leader.handle_fetch("b", FetchRequest(1, 0, 0, False), 10)  # b joins the ISR
    assert leader.isr == {"a", "b"}
    assert election_due(joined, LEADER_TIMER) == 10 + 100 + 1  # its lag check comes first
    assert election_due(leader.handle_fetch("b", FetchRequest(1, 0, 0, False), 20)) is None
    early = leader.tick(120)  # b last caught up at 20: not yet past lag_max_ms
    assert leader.isr == {"a", "b"} and not early.messages
    assert election_due(early, LEADER_TIMER) == 20 + 100 + 1
    late = leader.tick(121)
    assert leader.isr == {"a"}
    assert election_due(late, LEADER_TIMER) == 252  # c's announcement
    assert [d for d, _ in leader.tick(252).messages] == ["c"]  # b fetched at 20: not quiet


class TimerDriven:
    """Three replicas driven only by their timers and by messages that take 1 ms."""

    def __init__(self, seed: int) -> None:
        self.replicas = {node: replica(node, seed) for node in NODES}
        self.timers: dict[str, int] = {}
        self.in_flight: list[tuple[int, int, str, str, Message]] = []  # (due, n, to, from, m)
        self.sent = 0
        for node, each in self.replicas.items():
            self.carry(node, each.tick(0), 0)

    def carry(self, node: str, ready: ReplicaReady[Any], now_ms: int) -> None:
        due = election_due(ready)
        if due is not None:
            self.timers[node] = due  # a later timer of the same name replaces the earlier
        for destination, message in ready.messages:
            self.sent += 1
            heapq.heappush(self.in_flight, (now_ms + 1, self.sent, destination, node, message))

    def step(self) -> int:
        """Deliver the next message or fire the next timer, whichever is first; the time."""
        next_timer = min(self.timers.values())
        if self.in_flight and self.in_flight[0][0] <= next_timer:
            now_ms, _, destination, source, message = heapq.heappop(self.in_flight)
            target = self.replicas[destination]
            if isinstance(message, VoteRequest):
                ready = target.handle_vote_request(source, message, now_ms)
            elif isinstance(message, VoteReply):
                ready = target.handle_vote_reply(source, message, now_ms)
            else:
                assert isinstance(message, BeginEpoch)
                ready = target.handle_begin_epoch(source, message, now_ms)
            self.carry(destination, ready, now_ms)
            return now_ms
        node = min(self.timers, key=lambda n: self.timers[n])
        now_ms = self.timers.pop(node)
        self.carry(node, self.replicas[node].tick(now_ms), now_ms)
        return now_ms

    def leaders(self) -> list[PartitionReplica]:
        return [r for r in self.replicas.values() if r.role is Role.LEADER]


def test_replicas_ticked_only_at_their_timers_elect_one_leader() -> None:
    """No leader at the start, no interval ticks: a leader must emerge from the timers the
    replicas asked for, alone and in the newest epoch."""
    for seed in range(20):
        run = TimerDriven(seed)
        now_ms = 0
        while now_ms < 5_000 and not run.leaders():
            now_ms = run.step()
        leaders = run.leaders()
        assert len(leaders) == 1, f"seed {seed}: no leader by {now_ms} ms"
        assert all(r.epoch <= leaders[0].epoch for r in run.replicas.values()), f"seed {seed}"
