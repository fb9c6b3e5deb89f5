"""Deterministic, seeded simulation of KVNodeCore clusters with message and node faults.

A safety phase runs client writes and reads while messages are lost, delayed, reordered and
duplicated, links are partitioned and nodes crash and restart (keeping their data: the
engine is durable). A healing phase then delivers everything, runs hinted handoff and
anti-entropy, and the checkers run:

* all home replicas of every key hold the same object (convergence);
* no acknowledged write is lost, even though one node loses its disk before the heal: its dot is in the final context, and it is either still a
  sibling or was seen by a later write that is;
* siblings are exactly the writes no other surviving write had seen (truly concurrent).

The seed is in the test id and in every assertion message.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

import pytest

from blocks.core.clock import ManualClock
from blocks.core.errors import FailedPrecondition, InvalidArgument, Timeout, Unavailable
from blocks.core.hashing import HashRing
from blocks.kv.cluster.node import Fail, KVNodeCore, KVReady, QuorumConfig, Reply
from blocks.kv.cluster.versions import Dot, VersionedObject, VersionVector, merge

NODES = ["n1", "n2", "n3", "n4", "n5"]
KEYS = [b"k%d" % i for i in range(6)]


@dataclass
class Sim:
    seed: int
    faults: bool = True
    clock: ManualClock = field(default_factory=ManualClock)
    config: QuorumConfig = field(default_factory=QuorumConfig)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        ring = HashRing(NODES)
        self.nodes = {
            name: KVNodeCore(
                name, self.config, lambda k, r=ring: r.preference_list(k, len(NODES)), self.clock
            )
            for name in NODES
        }
        self.ring = ring
        self.queue: list[tuple[float, int, str, str, object]] = []
        self.sequence = 0
        self.crashed: set[str] = set()
        self.partition: list[set[str]] | None = None
        self.request_id = 0
        self.results: dict[int, Reply | Fail] = {}
        # (key, dot) of every write -> the dots of that key's writes it had seen
        self.writes: dict[tuple[bytes, Dot], frozenset[Dot]] = {}
        self.acked: list[tuple[bytes, Dot]] = []
        self.last_read: dict[bytes, VersionVector] = {}

    def healthy(self) -> set[str]:
        return set(NODES) - self.crashed

    def connected(self, a: str, b: str) -> bool:
        if a in self.crashed or b in self.crashed:
            return False
        return self.partition is None or any(a in g and b in g for g in self.partition)

    def run_effects(self, source: str, ready: KVReady) -> None:
        for target, message in ready.messages:
            self.send(source, target, message)
        for reply in ready.replies:
            self.results[reply.request_id] = reply

    def send(self, source: str, target: str, message: object) -> None:
        copies = 1
        if self.faults:
            if self.rng.random() < 0.1:
                return
            if self.rng.random() < 0.05:
                copies = 2
        for _ in range(copies):
            delay = self.rng.uniform(0.001, 0.05 if self.faults else 0.002)
            self.sequence += 1
            heapq.heappush(
                self.queue, (self.clock.monotonic() + delay, self.sequence, source, target, message)
            )

    def advance(self, seconds: float) -> None:
        end = self.clock.monotonic() + seconds
        while self.queue and self.queue[0][0] <= end:
            at, _, source, target, message = heapq.heappop(self.queue)
            self.clock.advance(max(0.0, at - self.clock.monotonic()))
            if self.connected(source, target):
                self.run_effects(target, self.nodes[target].handle(source, message))  # type: ignore[arg-type]
        self.clock.advance(max(0.0, end - self.clock.monotonic()))
        for name in self.healthy():
            self.run_effects(name, self.nodes[name].tick(self.healthy()))

    # -- client operations -------------------------------------------------------------------

    def coordinator(self, key: bytes) -> str | None:
        order = self.ring.preference_list(key, len(NODES))
        return next((n for n in order if n not in self.crashed), None)

    def put(self, key: bytes, value: bytes | None) -> None:
        node = self.coordinator(key)
        if node is None:
            return
        self.request_id += 1
        rid = self.request_id
        context = self.last_read.get(key, VersionVector())
        seen = frozenset(d for k, d in self.writes if k == key and context.covers(d))
        node_core = self.nodes[node]
        self.run_effects(node, node_core.coordinate_put(rid, key, value, context, self.healthy()))
        stored = node_core.objects.get(key)
        dot = None
        if stored is not None and stored.context.get(node) > 0:
            dot = Dot(node, stored.context.get(node))
            if (key, dot) not in self.writes:
                self.writes[key, dot] = seen
            else:
                dot = None  # refused before writing (e.g. Unavailable)
        self.advance(1.2)
        if dot is not None and isinstance(self.results.get(rid), Reply):
            self.acked.append((key, dot))

    def get(self, key: bytes) -> Reply | Fail | None:
        node = self.coordinator(key)
        if node is None:
            return None
        self.request_id += 1
        rid = self.request_id
        self.run_effects(node, self.nodes[node].coordinate_get(rid, key, self.healthy()))
        self.advance(1.2)
        result = self.results.get(rid)
        if isinstance(result, Reply) and result.result is not None:
            self.last_read[key] = result.result.context
        return result

    def heal(self) -> None:
        self.faults = False
        self.crashed.clear()
        self.partition = None
        for _ in range(3):
            self.advance(2.0)
            for a in NODES:
                for b in NODES:
                    if a != b:
                        self.run_effects(a, self.nodes[a].start_anti_entropy(b))
            self.advance(2.0)


def _check(sim: Sim) -> None:
    label = f"seed={sim.seed}"
    for key in KEYS:
        home = sim.ring.preference_list(key, sim.config.replicas)
        copies = [sim.nodes[n].objects.get(key) for n in home]
        assert all(c == copies[0] for c in copies), (label, key, copies)
        final: VersionedObject | None = copies[0]
        history = {d: seen for (k, d), seen in sim.writes.items() if k == key}
        acked = [d for k, d in sim.acked if k == key]
        if final is None:
            assert not acked, (label, key)
            continue
        surviving = {s.dot for s in final.siblings}
        for dot in acked:
            assert final.context.covers(dot), (label, key, dot)
            seen_later = any(dot in history.get(s, ()) for s in surviving)
            assert dot in surviving or seen_later, (label, key, dot)
        applied = {d for d in history if final.context.covers(d)}
        superseded = set().union(*(history[d] for d in applied)) if applied else set()
        assert surviving == applied - superseded, (label, key)


@pytest.mark.parametrize("seed", range(40))
def test_replicas_converge_and_keep_acknowledged_writes_under_faults(seed: int) -> None:
    sim = Sim(seed)
    rng = random.Random(seed * 7919)
    for step in range(60):
        roll = rng.random()
        if roll < 0.08 and len(sim.crashed) < 2:
            sim.crashed.add(rng.choice(NODES))
        elif roll < 0.16 and sim.crashed:
            sim.crashed.discard(rng.choice(sorted(sim.crashed)))
        elif roll < 0.2:
            shuffled = NODES[:]
            rng.shuffle(shuffled)
            cut = rng.randrange(1, len(NODES))
            sim.partition = [set(shuffled[:cut]), set(shuffled[cut:])]
        elif roll < 0.25:
            sim.partition = None
        key = rng.choice(KEYS)
        if rng.random() < 0.6:
            sim.put(key, None if rng.random() < 0.1 else b"v%d" % step)
        else:
            sim.get(key)
    # One node loses its disk for good: fewer than W=2 replicas of any write, so nothing
    # acknowledged may be lost.
    # The coordinator of the last acknowledged write is the likeliest holder of a lone copy.
    victim = sim.nodes[sim.acked[-1][1].node if sim.acked else rng.choice(NODES)]
    victim.objects.clear()
    victim.hints.clear()
    sim.heal()
    _check(sim)
    # The run must have exercised something: acknowledged writes and failed requests.
    assert sim.acked and any(isinstance(r, Fail) for r in sim.results.values()), sim.seed


def test_without_failures_reads_see_the_latest_acknowledged_write() -> None:
    sim = Sim(99, faults=False)
    for step in range(40):
        key = KEYS[step % len(KEYS)]
        sim.get(key)  # read first, so the write's context covers what is there
        sim.put(key, b"value-%d" % step)
        result = sim.get(key)
        assert isinstance(result, Reply) and result.result is not None
        assert result.result.values == [b"value-%d" % step]


def test_concurrent_blind_writes_become_siblings_and_a_read_write_resolves_them() -> None:
    sim = Sim(5, faults=False)
    key = KEYS[0]
    sim.put(key, b"left")
    sim.last_read.pop(key, None)
    sim.put(key, b"right")  # blind: its context saw nothing, so it is concurrent
    result = sim.get(key)
    assert isinstance(result, Reply) and result.result is not None
    assert sorted(result.result.values) == [b"left", b"right"]
    sim.put(key, b"merged")
    result = sim.get(key)
    assert isinstance(result, Reply) and result.result is not None
    assert result.result.values == [b"merged"]


def test_hinted_handoff_returns_writes_to_the_owner() -> None:
    sim = Sim(3, faults=False)
    key = KEYS[1]
    home = sim.ring.preference_list(key, 3)
    sim.crashed.add(home[2])
    sim.put(key, b"while-down")
    substitutes = [n for n in NODES if n not in home and sim.nodes[n].hints]
    assert substitutes, "a spare node should hold the hinted write"
    assert sim.nodes[home[2]].objects.get(key) is None
    sim.crashed.clear()
    sim.advance(1.0)  # the tick at its end sends the handoff
    sim.advance(1.0)  # which is delivered and acknowledged here
    assert sim.nodes[home[2]].objects[key].values == [b"while-down"]
    assert not any(sim.nodes[n].hints for n in NODES)
    assert all(key not in sim.nodes[n].objects for n in substitutes)


def test_quorum_failures_are_typed() -> None:
    clock = ManualClock()
    order = ["solo", "x", "y"]
    lonely = KVNodeCore("solo", QuorumConfig(replicas=3), lambda k: order, clock)
    # Only itself reachable and no spare: 1 target < W=2, refused at once, nothing stored.
    failed = lonely.coordinate_put(1, b"k", b"v", VersionVector(), {"solo"})
    assert not failed.messages
    assert isinstance(failed.replies[0], Fail) and isinstance(failed.replies[0].error, Unavailable)
    assert lonely.objects == {}
    # Peers "healthy" but silent (a partition the detector has not noticed): no W acks in
    # time means Timeout, never a success on the coordinator's copy alone.
    sent = lonely.coordinate_put(2, b"k", b"v", VersionVector(), {"solo", "x", "y"})
    assert len(sent.messages) == 2 and not sent.replies
    clock.advance(5.0)
    timed_out = [e for e in lonely.tick(set()).replies if isinstance(e, Fail)]
    assert len(timed_out) == 1 and isinstance(timed_out[0].error, Timeout)
    # A node outside the preference list does not coordinate writes: it names who should.
    outsider = KVNodeCore("z", QuorumConfig(replicas=3), lambda k: [*order, "z"], clock)
    refused = outsider.coordinate_put(
        3, b"k", b"v", VersionVector(), {"solo", "x", "y", "z"}
    ).replies
    assert isinstance(refused[0], Fail) and isinstance(refused[0].error, FailedPrecondition)
    assert refused[0].error.details["owner"] == "solo"
    # Quorums are validated.
    with pytest.raises(InvalidArgument):
        QuorumConfig(replicas=3, read_quorum=4)
    assert merge(None, None).siblings == ()


def _lone(name: str, lww: bool, clock: ManualClock) -> KVNodeCore:
    config = QuorumConfig(replicas=1, read_quorum=1, write_quorum=1, lww=lww)
    return KVNodeCore(name, config, lambda k: [name], clock)


def _written(core: KVNodeCore, request_id: int, key: bytes, value: bytes) -> VersionedObject:
    reply = core.coordinate_put(request_id, key, value, VersionVector(), {core.node_id})
    assert isinstance(reply.replies[0], Reply) and reply.replies[0].result is not None
    return reply.replies[0].result


@pytest.mark.parametrize("lww", [False, True])
def test_a_lone_replica_answers_a_get_with_its_stored_object(lww: bool) -> None:
    clock = ManualClock()
    solo = _lone("solo", lww, clock)
    assert solo.coordinate_get(1, b"absent", {"solo"}).replies == [Reply(1, None)]
    stored = _written(solo, 2, b"k", b"v")
    answered = solo.coordinate_get(3, b"k", {"solo"})
    assert not answered.messages and answered.replies == [Reply(3, stored)]
    assert answered.replies[0].result is stored  # the stored object, wire form kept
    # Two siblings restored from disk: what the quorum round answers (under LWW, the winner).
    both = merge(stored, _written(_lone("other", lww, clock), 4, b"k", b"w"))
    solo.restore(b"two", both, [])
    reply = solo.coordinate_get(5, b"two", {"solo"}).replies[0]
    assert isinstance(reply, Reply) and reply.result == merge(None, both, lww=lww)
    assert reply.result is not None and len(reply.result.siblings) == (1 if lww else 2)
    assert not solo.tick({"solo"}).replies  # no round was left behind
