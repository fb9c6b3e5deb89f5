"""The pure replica core: high watermark, ISR, elections, fencing, truncation, wire checks."""

from __future__ import annotations

import random

import pytest

from blocks.core.errors import InvalidArgument, PeerError
from blocks.pubsub.replica import FollowerAction, PartitionReplica, ReplicaConfig, Role
from blocks.pubsub.replica_messages import (
    BeginEpoch,
    EpochMarker,
    FetchDecision,
    FetchRequest,
    HardState,
    Message,
    ReplicaReady,
    VoteReply,
    VoteRequest,
    decode,
    encode,
)

NODES = ("a", "b", "c")


def replica(node: str, **kwargs: object) -> PartitionReplica:
    config = ReplicaConfig(node, NODES, election_timeout_ms=100, lag_max_ms=200)
    return PartitionReplica(config, random.Random(node), 0, **kwargs)  # type: ignore[arg-type]


def created(node: str) -> PartitionReplica:
    config = ReplicaConfig(node, NODES, election_timeout_ms=100, lag_max_ms=200)
    return PartitionReplica.created(config, random.Random(node), 0)


def the_vote(ready: ReplicaReady[None], to: str) -> VoteReply:
    """The one message of a vote request's step: the reply to ``to``."""
    [(destination, reply)] = ready.messages
    assert destination == to and isinstance(reply, VoteReply)
    return reply


def the_reply(ready: ReplicaReady[FetchDecision]) -> FetchDecision:
    (decision,) = ready.replies
    return decision


def test_high_watermark_needs_a_majority_and_every_in_sync_replica() -> None:
    leader = created("a")
    assert leader.role is Role.LEADER
    # The creation's hard state is the first step's record, once.
    assert leader.tick(0).records == [HardState(1, "a")]
    assert not leader.tick(0).records
    leader.note_appended(0, [1, 1, 1, 1], now_ms=0)
    assert leader.hw == 0  # only the leader holds them
    leader.handle_fetch("b", FetchRequest(1, 0, 0), 1)  # b joins the ISR at offset 0
    leader.handle_fetch("b", FetchRequest(1, 3, 1), 2)
    assert leader.isr == {"a", "b"} and leader.hw == 3  # a majority and the whole ISR
    leader.handle_fetch("c", FetchRequest(1, 1, 1), 3)
    assert "c" not in leader.isr  # below the high watermark: not in sync yet
    leader.handle_fetch("c", FetchRequest(1, 3, 1), 4)
    assert leader.isr == {"a", "b", "c"} and leader.hw == 3
    leader.handle_fetch("b", FetchRequest(1, 4, 1), 5)
    assert leader.hw == 3  # c, in sync, holds only 3
    leader.handle_fetch("b", FetchRequest(1, 4, 1), 240)
    leader.tick(250)  # c has not caught up for longer than lag_max_ms: it leaves the ISR
    assert leader.isr == {"a", "b"}
    assert leader.hw == 4


def test_election_picks_the_most_up_to_date_log_and_fences_the_old_leader() -> None:
    b, c = replica("b", epoch=1, epochs=[(1, 0)], log_end=5), replica("c", epoch=1)
    b.leader = c.leader = "a"
    c.epochs, c.log_end = [(1, 0)], 3
    # c times out first but b, with the longer log, refuses even its pre-vote
    out = c.tick(10_000)
    assert c.role is Role.PRE_CANDIDATE and not out.records  # a pre-vote changes nothing
    [(_, request)] = [m for m in out.messages if m[0] == "b"]
    assert isinstance(request, VoteRequest) and request.pre
    refused = b.handle_vote_request("c", request, 10_000)
    assert not the_vote(refused, "c").granted and not refused.records
    # b times out, gets c's pre-vote, then its real vote, and leads epoch 2
    out = b.tick(20_000)
    [(_, pre)] = [m for m in out.messages if m[0] == "c"]
    assert isinstance(pre, VoteRequest)
    out = b.handle_vote_reply("c", the_vote(c.handle_vote_request("b", pre, 20_000), "b"), 20_000)
    assert b.role is Role.CANDIDATE and b.epoch == 2
    assert out.records == [HardState(2, "b")]  # its own vote, persisted before it asks
    [(_, real)] = [m for m in out.messages if m[0] == "c"]
    assert isinstance(real, VoteRequest)
    granted = c.handle_vote_request("b", real, 20_000)
    vote = the_vote(granted, "b")
    assert vote.granted and c.voted_for == "b" and granted.records == [HardState(2, "b")]
    won = b.handle_vote_reply("c", vote, 20_000)
    assert b.describe()["role"] == "leader" and won.records == [EpochMarker(2)]
    assert sorted(d for d, m in won.messages if isinstance(m, BeginEpoch)) == ["a", "c"]
    b.note_appended(5, [2], 20_000)  # the epoch marker
    # the old leader, still in epoch 1, is fenced by the first message of epoch 2
    old = created("a")
    fenced = old.handle_fetch("c", FetchRequest(2, 3, 1), 20_001)
    answer = the_reply(fenced)
    assert answer.kind == "fenced" and old.role is Role.FOLLOWER and old.epoch == 2
    assert fenced.records == [HardState(2, None)]  # adopted before the answer leaves


def test_a_divergent_tail_is_cut_back_to_the_common_prefix() -> None:
    leader = replica("a", epoch=3, epochs=[(1, 0), (3, 5)], log_end=10)
    leader.role, leader.leader = Role.LEADER, "a"
    follower = replica("b", epoch=3, epochs=[(1, 0), (2, 5)], log_end=8)
    follower.leader = "a"
    request = follower.fetch_request()
    assert request == FetchRequest(3, 8, 2)
    decision = the_reply(leader.handle_fetch("b", request, 1))
    assert (decision.kind, decision.diverging_epoch, decision.diverging_end) == ("diverging", 1, 5)
    [(action, cut)] = follower.handle_fetch_reply("a", decision, 1).replies
    assert (action, cut) == (FollowerAction.TRUNCATE, 5)
    follower.note_truncated(cut)
    assert follower.epochs == [(1, 0)] and follower.log_end == 5
    decision = the_reply(leader.handle_fetch("b", follower.fetch_request(), 2))  # type: ignore[arg-type]
    assert decision.kind == "records" and decision.offset == 5


def test_stale_and_newer_epochs() -> None:
    follower = replica("b", epoch=4)
    follower.leader = "a"
    stale = FetchDecision("records", 3, "a", 0)
    assert follower.handle_fetch_reply("a", stale, 1).replies == ((FollowerAction.IGNORE, 0),)
    adopted = follower.handle_begin_epoch("c", BeginEpoch(6, "c"), 2)
    assert (follower.epoch, follower.leader, follower.role) == (6, "c", Role.FOLLOWER)
    assert adopted.records == [HardState(6, "c")] and not adopted.messages
    assert follower.handle_begin_epoch("a", BeginEpoch(5, "a"), 3).is_empty  # older: ignored
    assert follower.leader == "c"
    reply = the_vote(follower.handle_vote_request("a", VoteRequest(6, "a", 0, 0, False), 4), "a")
    assert not reply.granted  # c already won epoch 6
    with pytest.raises(InvalidArgument):
        follower.handle_vote_request("z", VoteRequest(7, "z", 0, 0, False), 5)


def test_wire_round_trip_and_malformed_messages() -> None:
    messages: list[Message] = [
        VoteRequest(3, "a", 2, 10, True),
        VoteReply(3, 4, False, True, None),
        BeginEpoch(2, "b"),
        FetchRequest(1, 0, 0),
        FetchDecision("diverging", 2, "a", 5, 1, 4, 0),
    ]
    for message in messages:
        assert decode(encode(message)) == message
    for bad in (
        None,
        [],
        ["Nope", 1],
        ["BeginEpoch", 2],
        ["BeginEpoch", "2", "b"],
        ["BeginEpoch", -1, "b"],
        ["FetchRequest", True, 0, 0],
        ["VoteReply", 1, 1, 1, True, None],
    ):
        with pytest.raises(PeerError):
            decode(bad)
    with pytest.raises(InvalidArgument):
        ReplicaConfig("z", NODES)
