"""Anti-entropy between two cores: divergence of every kind is repaired by one exchange, with
the trees built from the kept per-key entries (no second tree for the answer) and after a
placement change."""

from __future__ import annotations

from blocks.core.clock import ManualClock
from blocks.core.hashing import HashRing
from blocks.kv.cluster.node import KVNodeCore, QuorumConfig
from blocks.kv.cluster.quorum import Placements
from blocks.kv.cluster.versions import VersionVector

NODES = {"n1", "n2", "n3"}


def _core(name: str, ring: list[HashRing], replicas: int = 3) -> KVNodeCore:
    placements = Placements()
    config = QuorumConfig(replicas=replicas, read_quorum=2, write_quorum=2)
    return KVNodeCore(
        name, config, lambda key: placements.of(ring[0], key, min(3, len(ring[0]))), ManualClock()
    )


def _exchange(cores: dict[str, KVNodeCore], initiator: str, peer: str) -> int:
    """Run one exchange to the end; the number of objects that travelled."""
    queue = [(initiator, m) for m in cores[initiator].start_anti_entropy(peer).messages]
    moved = 0
    while queue:
        sender, (to, message) = queue.pop(0)
        moved += len(getattr(message, "objects", ()))
        queue += [(to, m) for m in cores[to].handle(sender, message).messages]
    return moved


def _write(core: KVNodeCore, key: bytes, value: bytes, rid: list[int]) -> None:
    """A write through ``core`` that supersedes what ``core`` holds (as a put without a
    context does)."""
    rid[0] += 1
    stored = core.objects.get(key)
    context = VersionVector() if stored is None else stored.context
    core.coordinate_put(rid[0], key, value, context, NODES)


def test_one_exchange_repairs_missing_stale_and_concurrent_copies() -> None:
    ring = [HashRing(sorted(NODES))]
    cores = {n: _core(n, ring) for n in ("n1", "n2")}
    a, b = cores["n1"], cores["n2"]
    rid = [0]
    for i in range(300):  # the same objects on both
        _write(a, b"same-%d" % i, b"v", rid)
        b.objects[b"same-%d" % i] = a.objects[b"same-%d" % i]
    assert _exchange(cores, "n1", "n2") == 0  # equal roots: nothing moves
    _write(a, b"only-a", b"1", rid)
    _write(b, b"only-b", b"2", rid)
    _write(a, b"same-7", b"newer", rid)  # a newer version on a
    _write(a, b"both", b"from-a", rid)
    _write(b, b"both", b"from-b", rid)  # concurrent: siblings after the merge
    moved = _exchange(cores, "n1", "n2")
    assert a.objects == b.objects
    assert a.objects[b"same-7"].values == [b"newer"]
    assert sorted(a.objects[b"both"].values) == [b"from-a", b"from-b"]
    assert b.anti_entropy_repairs >= 3 and a.anti_entropy_repairs >= 2
    assert moved < 300  # only differing leaves travelled
    assert "n2" not in a.digests.started  # the exchange used up the tree it started with
    assert _exchange(cores, "n2", "n1") == 0


def test_a_write_between_start_and_answer_does_not_stop_the_repair() -> None:
    ring = [HashRing(sorted(NODES))]
    cores = {n: _core(n, ring) for n in ("n1", "n2")}
    a, b = cores["n1"], cores["n2"]
    rid = [0]
    _write(a, b"diverged", b"a", rid)
    _write(b, b"other", b"b", rid)
    [(_, leaves)] = a.start_anti_entropy("n2").messages
    _write(a, b"late", b"written after the tree", rid)
    answer = b.handle("n1", leaves)
    for _, message in answer.messages:
        for _, back in a.handle("n2", message).messages:
            b.handle("n1", back)
    assert a.objects[b"other"] == b.objects[b"other"]
    assert a.objects[b"diverged"] == b.objects[b"diverged"]
    _exchange(cores, "n1", "n2")  # the next exchange takes the late write too
    assert a.objects == b.objects


def test_after_a_placement_change_the_trees_cover_the_new_shared_keys() -> None:
    ring = [HashRing(["n1", "n2", "n3"])]
    cores = {n: _core(n, ring, replicas=2) for n in ("n1", "n2")}
    a, b = cores["n1"], cores["n2"]
    key = next(
        b"k%d" % i
        for i in range(1000)
        if set(ring[0].preference_list(b"k%d" % i, 2)) == {"n1", "n3"}
    )
    _write(a, key, b"v", [0])
    assert _exchange(cores, "n1", "n2") == 0  # not shared by n1 and n2: not in their trees
    ring[0] = HashRing(["n1", "n2"])  # n3 left: every key is shared by both
    for core in cores.values():
        core.placement_epoch += 1
    _exchange(cores, "n1", "n2")
    assert b.objects[key] == a.objects[key]


def test_entries_of_keys_gone_are_dropped_now_and_then() -> None:
    ring = [HashRing(sorted(NODES))]
    a = _core("n1", ring)
    rid = [0]
    for i in range(200):
        _write(a, b"k%d" % i, b"v", rid)
    a.start_anti_entropy("n2")
    assert len(a.digests._cache) == 200
    for i in range(150):
        del a.objects[b"k%d" % i]
    a.start_anti_entropy("n2")
    assert len(a.digests._cache) == 50
