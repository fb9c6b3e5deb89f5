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

from collections.abc import Callable, Iterable
from typing import Any, Protocol

import xxhash

from blocks.core.codec import pack
from blocks.core.hashing import key_hash
from blocks.core.ready import NOTHING, Ready
from blocks.kv.cluster.merkle import MerkleTree, entry_hash
from blocks.kv.cluster.messages import KVReady, SyncLeaves, SyncObjects
from blocks.kv.cluster.quorum import QuorumConfig
from blocks.kv.cluster.versions import VersionedObject, merge, object_to_wire

__all__ = [
    "Digests",
    "SyncingCore",
    "answer_sync",
    "apply_sync",
    "object_digest",
    "start_anti_entropy",
]


class SyncingCore(Protocol):
    """What the exchange reads and changes of a node core (``KVNodeCore`` is the one): stated
    here so that this module need not import ``node.py``, which imports it."""

    anti_entropy_repairs: int

    @property
    def node_id(self) -> str: ...
    @property
    def config(self) -> QuorumConfig: ...
    @property
    def objects(self) -> dict[bytes, VersionedObject]: ...
    @property
    def digests(self) -> Digests: ...
    @property
    def placement_epoch(self) -> int: ...
    @property
    def placement(self) -> Callable[[bytes], list[str]]: ...
    def _store(self, key: bytes, obj: VersionedObject, hint_owner: str | None) -> None: ...


def object_digest(obj: VersionedObject) -> bytes:
    return xxhash.xxh3_64_digest(pack(object_to_wire(obj)))


class Digests:
    """Per key, what its tree entry needs, recomputed only when it changes: ``key_hash``, the
    entry hash of its object's digest (when the key holds a new object), and its home set
    (when the placement returns a new list, i.e. the ring changed). Also, per peer, the keys
    of the last tree this node sent it (``started``), so the answer to that exchange needs no
    second tree."""

    __slots__ = ("_cache", "started")

    def __init__(self) -> None:
        # key -> [object, key_hash, entry_hash or None (not yet), placement epoch, home set]
        self._cache: dict[bytes, list[Any]] = {}
        self.started: dict[str, list[tuple[bytes, int]]] = {}

    def entries(
        self, items: Iterable[tuple[bytes, VersionedObject]]
    ) -> list[tuple[bytes, int, int]]:
        """``(key, key_hash, entry_hash)`` of each pair."""
        out: list[tuple[bytes, int, int]] = []
        for key, obj in items:
            cached = self._cache.get(key)
            if cached is None:
                cached = self._cache[key] = [obj, key_hash(key), None, -1, frozenset()]
            out.append((key, cached[1], _entry_hash(key, obj, cached)))
        return out

    def forget_missing(self, objects: dict[bytes, VersionedObject]) -> None:
        """Drop the entries of keys this node no longer holds."""
        self._cache = {k: c for k, c in self._cache.items() if k in objects}

    def shared_tree(
        self, core: SyncingCore, peer: str
    ) -> tuple[MerkleTree, list[tuple[bytes, int]]]:
        """The tree over the keys ``core`` and ``peer`` are both home nodes for, and those
        keys with their ``key_hash``: one pass over the objects, in which a key whose object
        and placement did not change since the last tree costs a few lookups, no hashing and
        no placement."""
        node_id, replicas, placement = core.node_id, core.config.replicas, core.placement
        epoch = core.placement_epoch
        depth = core.config.merkle_depth
        shift = 64 - depth
        leaves = [0] * (1 << depth)
        cache = self._cache
        keys: list[tuple[bytes, int]] = []
        for key, obj in core.objects.items():
            cached = cache.get(key)
            if cached is None:
                home = frozenset(placement(key)[:replicas])
                cached = cache[key] = [obj, key_hash(key), None, epoch, home]
            elif cached[3] != epoch:
                cached[3], cached[4] = epoch, frozenset(placement(key)[:replicas])
            home = cached[4]
            if node_id not in home or peer not in home:
                continue
            entry = cached[2]
            if cached[0] is not obj or entry is None:
                entry = _entry_hash(key, obj, cached)
            hashed_key = cached[1]
            leaves[hashed_key >> shift] ^= entry
            keys.append((key, hashed_key))
        return MerkleTree.from_leaves(depth, leaves), keys


def _entry_hash(key: bytes, obj: VersionedObject, cached: list[Any]) -> int:
    """The entry hash of ``key`` holding ``obj``, from ``cached`` unless the object is new."""
    if cached[0] is not obj or cached[2] is None:
        cached[0] = obj
        cached[2] = entry_hash(key, object_digest(obj))
    entry: int = cached[2]
    return entry


def start_anti_entropy(core: SyncingCore, peer: str) -> KVReady:
    digests = core.digests
    if len(digests._cache) > len(core.objects) + len(core.objects) // 4 + 64:
        digests.forget_missing(core.objects)  # keys gone (hand-offs): now and then, not always
    tree, keys = digests.shared_tree(core, peer)
    digests.started[peer] = keys
    leaves = tuple(tree.level(core.config.merkle_depth))
    return Ready([(peer, SyncLeaves(tree.root, leaves))])


def answer_sync(core: SyncingCore, sender: str, message: SyncLeaves) -> KVReady:
    depth = core.config.merkle_depth
    if len(message.leaves) != 1 << depth:
        return NOTHING
    tree, keys = core.digests.shared_tree(core, sender)
    if tree.root == message.root:
        return NOTHING
    ours = tree.level(depth)
    differing = tuple(
        i for i, (a, b) in enumerate(zip(ours, message.leaves, strict=True)) if a != b
    )
    objects = _objects_in(core.objects, keys, differing, depth)
    return Ready([(sender, SyncObjects(objects, differing, answer_expected=True))])


def apply_sync(core: SyncingCore, sender: str, message: SyncObjects) -> KVReady:
    """Merge the peer's objects of the differing leaves; answer with ours where they differ.

    A key whose merged object here equals the one the peer sent is left out of the answer
    (the peer holds it already), and an object that a merge does not change is not stored
    again (no write, no save).
    """
    candidates: tuple[tuple[bytes, VersionedObject], ...] = ()
    if message.answer_expected:
        # The keys of the tree this node sent (the exchange it started); a new tree only if
        # that is gone. Keys written since then are not offered: they are being replicated.
        keys = core.digests.started.pop(sender, None)
        if keys is None:
            keys = core.digests.shared_tree(core, sender)[1]
        candidates = _objects_in(core.objects, keys, message.leaves, core.config.merkle_depth)
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
        return Ready([(sender, SyncObjects(tuple(answer), message.leaves, answer_expected=False))])
    return NOTHING


def _objects_in(
    objects: dict[bytes, VersionedObject],
    keys: list[tuple[bytes, int]],
    leaves: Iterable[int],
    depth: int,
) -> tuple[tuple[bytes, VersionedObject], ...]:
    """The objects held now of ``keys`` (``(key, key_hash)``) that fall in ``leaves``."""
    wanted = set(leaves)
    shift = 64 - depth
    chosen = sorted(key for key, hashed_key in keys if hashed_key >> shift in wanted)
    return tuple((key, objects[key]) for key in chosen if key in objects)
