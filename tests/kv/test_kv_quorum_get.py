"""A get's answer and its read repair: the answer merges the first R copies, and a copy heard
after the answer still reaches the repair (merged on top of the answer, not lost)."""

from __future__ import annotations

from blocks.core.clock import ManualClock
from blocks.core.hashing import HashRing
from blocks.kv.cluster.hlc import HlcTimestamp
from blocks.kv.cluster.messages import GetReply, PutReplica, Reply
from blocks.kv.cluster.node import KVNodeCore, QuorumConfig
from blocks.kv.cluster.quorum import Placements
from blocks.kv.cluster.versions import VersionVector, merge, update

NODES = {"n1", "n2", "n3"}


def _coordinator() -> KVNodeCore:
    ring, placements = HashRing(sorted(NODES)), Placements()
    config = QuorumConfig(replicas=3, read_quorum=2, write_quorum=2)
    return KVNodeCore("n1", config, lambda key: placements.of(ring, key, 3), ManualClock())


def test_a_copy_heard_after_the_answer_is_merged_into_the_repair() -> None:
    core = _coordinator()
    common = update(None, VersionVector(), "n1", b"old", HlcTimestamp(1, 0))
    core.objects[b"k"] = common
    concurrent = update(None, VersionVector(), "n3", b"other", HlcTimestamp(2, 0))
    asked = core.coordinate_get(1, b"k", NODES)
    assert {to for to, _ in asked.messages} == {"n2", "n3"} and not asked.replies
    answer = core.handle("n2", GetReply(1, common))  # R = 2: n1 and n2 agree
    assert list(answer.replies) == [Reply(1, common)] and not answer.messages
    repair = core.handle("n3", GetReply(1, concurrent))  # late, and concurrent
    merged = merge(common, concurrent)
    assert sorted(merged.values) == [b"old", b"other"]
    assert core.objects[b"k"] == merged  # the coordinator's own copy repaired
    assert not repair.replies
    sent = dict(repair.messages)
    assert set(sent) == {"n2", "n3"}  # n3 lacked the common copy too
    for message in sent.values():
        assert isinstance(message, PutReplica) and message.obj == merged


def test_equal_copies_answer_and_repair_nothing() -> None:
    core = _coordinator()
    obj = update(None, VersionVector(), "n1", b"v", HlcTimestamp(1, 0))
    core.objects[b"k"] = obj
    core.coordinate_get(1, b"k", NODES)
    assert list(core.handle("n3", GetReply(1, obj)).replies) == [Reply(1, obj)]
    assert core.handle("n2", GetReply(1, obj)).is_empty
    assert core.objects[b"k"] is obj


def test_a_get_past_its_deadline_repairs_from_every_copy_heard() -> None:
    clock = ManualClock()
    ring, placements = HashRing(sorted(NODES)), Placements()
    config = QuorumConfig(replicas=3, read_quorum=3, write_quorum=2, timeout_s=1.0)
    core = KVNodeCore("n1", config, lambda key: placements.of(ring, key, 3), clock)
    mine = update(None, VersionVector(), "n1", b"mine", HlcTimestamp(1, 0))
    theirs = update(None, VersionVector(), "n2", b"theirs", HlcTimestamp(2, 0))
    core.objects[b"k"] = mine
    core.coordinate_get(1, b"k", NODES)
    assert core.handle("n2", GetReply(1, theirs)).is_empty  # R = 3: not yet
    clock.advance(2.0)
    effects = core.tick(NODES)
    assert not any(isinstance(e, Reply) for e in effects.replies)  # it failed with Timeout
    assert sorted(core.objects[b"k"].values) == [b"mine", b"theirs"]
    assert {to for to, _ in effects.messages} == {"n2"}
