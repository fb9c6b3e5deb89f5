"""Anti-entropy between two replicas: Merkle trees over the keys both should hold.

Theory of operation (the protocol; ``merkle.py`` has the tree). Every
``anti_entropy_interval_s`` a node picks a healthy peer and sends the leaf hashes of a tree
built over the keys both of them are home nodes for (``SyncLeaves``). The peer builds its own
tree over the same key set; equal roots end the exchange, otherwise it answers with its objects
in the differing leaves (``SyncObjects``, answer expected), the initiator merges them and sends
its own objects of those leaves back. Only differing ranges move.

A tree is rebuilt for every exchange, so its cost is per key: where the key's home nodes are
(a walk of the hash ring) and a digest of its object (msgpack and xxh3). ``Digests`` keeps the
last digest of each key beside the object it was computed from, and reuses it while the key
still holds that same object (objects are immutable: a write stores a new one), so a tree over
keys that did not change costs dictionary lookups (the key's hash and its entry hash are kept
too, so neither the tree nor the choice of keys in differing leaves hashes a key again). The home nodes are cached by the driver's
placement (``driver.py``) until the ring changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import xxhash

from blocks.core.codec import pack
from blocks.core.hashing import key_hash
from blocks.kv.merkle import MerkleTree, entry_hash
from blocks.kv.messages import Effect, Send, SyncLeaves, SyncObjects
from blocks.kv.versions import VersionedObject, merge, object_to_wire

if TYPE_CHECKING:
    from blocks.kv.node import KVNodeCore

__all__ = ["Digests", "answer_sync", "apply_sync", "object_digest", "start_anti_entropy"]


def object_digest(obj: VersionedObject) -> bytes:
    return xxhash.xxh3_64_digest(pack(object_to_wire(obj)))


class Digests:
    """Per key, what its tree entry needs (``key_hash`` and the entry hash of its object's
    digest), recomputed only when the key holds a new object."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[bytes, tuple[VersionedObject, int, int]] = {}

    def entries(
        self, items: Iterable[tuple[bytes, VersionedObject]]
    ) -> list[tuple[bytes, int, int]]:
        """``(key, key_hash, entry_hash)`` of each pair."""
        cache = self._cache
        out: list[tuple[bytes, int, int]] = []
        for key, obj in items:
            cached = cache.get(key)
            if cached is None or cached[0] is not obj:
                digest = object_digest(obj)
                cached = cache[key] = (obj, key_hash(key), entry_hash(key, digest))
            out.append((key, cached[1], cached[2]))
        return out

    def forget_missing(self, objects: dict[bytes, VersionedObject]) -> None:
        """Drop the entries of keys this node no longer holds (once per exchange it starts,
        so the cache holds at most one stale object per key between two of them)."""
        self._cache = {k: c for k, c in self._cache.items() if k in objects}


_Shared = tuple[MerkleTree, dict[bytes, VersionedObject], list[tuple[bytes, int, int]]]


def shared_tree(core: KVNodeCore, peer: str) -> _Shared:
    pair = {core.node_id, peer}
    replicas = core.config.replicas
    placement = core.placement
    shared = {k: o for k, o in core.objects.items() if pair <= set(placement(k)[:replicas])}
    entries = core.digests.entries(shared.items())
    tree = MerkleTree(core.config.merkle_depth)
    for _, hashed_key, hashed_entry in entries:
        tree.add_hashed(hashed_key, hashed_entry)
    return tree, shared, entries


def start_anti_entropy(core: KVNodeCore, peer: str) -> list[Effect]:
    core.digests.forget_missing(core.objects)
    tree, _, _ = shared_tree(core, peer)
    leaves = tuple(tree.level(core.config.merkle_depth))
    return [Send(peer, SyncLeaves(tree.root, leaves))]


def answer_sync(core: KVNodeCore, sender: str, message: SyncLeaves) -> list[Effect]:
    tree, shared, entries = shared_tree(core, sender)
    depth = core.config.merkle_depth
    if tree.root == message.root or len(message.leaves) != 1 << depth:
        return []
    ours = tree.level(depth)
    differing = tuple(
        i for i, (a, b) in enumerate(zip(ours, message.leaves, strict=True)) if a != b
    )
    objects = _objects_in(shared, entries, differing, depth)
    return [Send(sender, SyncObjects(objects, differing, answer_expected=True))]


def apply_sync(core: KVNodeCore, sender: str, message: SyncObjects) -> list[Effect]:
    """Merge the peer's objects of the differing leaves; answer with ours where they differ.

    A key whose merged object here equals the one the peer sent is left out of the answer
    (the peer holds it already), and an object that a merge does not change is not stored
    again (no write, no save).
    """
    candidates: tuple[tuple[bytes, VersionedObject], ...] = ()
    if message.answer_expected:
        _, shared, entries = shared_tree(core, sender)
        candidates = _objects_in(shared, entries, message.leaves, core.config.merkle_depth)
    received: dict[bytes, VersionedObject] = {}
    for key, obj in message.objects:
        received[key] = obj
        if core.node_id in core.placement(key)[: core.config.replicas]:
            before = core.objects.get(key)
            merged = merge(before, obj, lww=core.config.lww)
            if merged != before:
                core.anti_entropy_repairs += 1
                core._store(key, merged, None)
    answer = []
    for key, _ in candidates:
        ours = core.objects.get(key)
        if ours is not None and ours != received.get(key):
            answer.append((key, ours))
    if answer:
        return [Send(sender, SyncObjects(tuple(answer), message.leaves, answer_expected=False))]
    return []


def _objects_in(
    shared: dict[bytes, VersionedObject],
    entries: list[tuple[bytes, int, int]],
    leaves: Iterable[int],
    depth: int,
) -> tuple[tuple[bytes, VersionedObject], ...]:
    wanted = set(leaves)
    shift = 64 - depth
    keys = sorted(key for key, hashed_key, _ in entries if hashed_key >> shift in wanted)
    return tuple((key, shared[key]) for key in keys)
