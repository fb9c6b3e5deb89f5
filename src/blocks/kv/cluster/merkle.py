"""Merkle trees over the key-hash space, for anti-entropy between replicas.

Theory of operation. The 64-bit ``key_hash`` space is cut into ``2**depth`` equal leaf ranges.
A leaf's hash is the XOR of ``xxh3(key || digest(object))`` over the keys in its range, so
adding, removing or changing one key is O(1) at the leaf, independent of insertion order, and
two replicas holding the same objects for the same keys get the same leaf, whatever order
they learned them in. An inner node hashes its two children; the root summarises everything.

Two replicas compare top-down (``differing_leaves``): equal roots end the exchange in one
message; otherwise only the subtrees whose hashes differ are walked, and only the keys in the
differing leaves are exchanged and merged. Each replica builds its tree over just the keys
both of them should hold, so trees are comparable even when their key ranges only overlap.

Pure data: no I/O. Inner hashes are recomputed lazily after updates (``root``, ``level``).
"""

from __future__ import annotations

from collections.abc import Iterable

import xxhash

from blocks.core.errors import InvalidArgument
from blocks.core.hashing import key_hash

__all__ = ["DEPTH_MAX", "MerkleTree", "differing_leaves", "entry_hash", "leaf_of"]

DEPTH_MAX = 20
_MASK = (1 << 64) - 1


def leaf_of(key: bytes, depth: int) -> int:
    return key_hash(key) >> (64 - depth) if depth else 0


def entry_hash(key: bytes, digest: bytes) -> int:
    """What a key holding an object with ``digest`` contributes to its leaf."""
    return xxhash.xxh3_64_intdigest(len(key).to_bytes(4, "little") + key + digest)


class MerkleTree:
    """A fixed-depth tree of ``2**depth`` leaves; ``set``/``remove`` keep it current."""

    __slots__ = ("_dirty", "_levels", "depth")

    def __init__(self, depth: int = 10, entries: Iterable[tuple[bytes, bytes]] = ()) -> None:
        if not 0 <= depth <= DEPTH_MAX:
            raise InvalidArgument(f"depth must be in [0, {DEPTH_MAX}]")
        self.depth = depth
        # _levels[d] holds 2**d hashes; _levels[depth] are the leaves.
        self._levels: list[list[int]] = [[0] * (1 << d) for d in range(depth + 1)]
        self._dirty = True  # inner nodes start unset, even for an empty tree
        for key, digest in entries:
            self.add(key, digest)

    @classmethod
    def from_leaves(cls, depth: int, leaves: list[int]) -> MerkleTree:
        """A tree whose leaf hashes are ``leaves`` (``2**depth`` of them, taken, not copied)."""
        tree = cls(depth)
        if len(leaves) != 1 << depth:
            raise InvalidArgument(f"a tree of depth {depth} has {1 << depth} leaves")
        tree._levels[depth] = leaves
        return tree

    def add(self, key: bytes, digest: bytes) -> None:
        """Account for ``key`` holding an object with ``digest`` (once per key)."""
        self._levels[self.depth][leaf_of(key, self.depth)] ^= entry_hash(key, digest)
        self._dirty = True

    def add_hashed(self, key_hash_: int, entry_hash: int) -> None:
        """``add`` for a caller that kept ``key_hash(key)`` and ``entry_hash(key, digest)``."""
        self._levels[self.depth][key_hash_ >> (64 - self.depth)] ^= entry_hash
        self._dirty = True

    def remove(self, key: bytes, digest: bytes) -> None:
        """Undo an ``add`` of the same pair (XOR is its own inverse)."""
        self.add(key, digest)

    def replace(self, key: bytes, old_digest: bytes | None, new_digest: bytes | None) -> None:
        if old_digest is not None:
            self.remove(key, old_digest)
        if new_digest is not None:
            self.add(key, new_digest)

    def level(self, depth: int) -> list[int]:
        """The hashes at ``depth`` (0 is the root), recomputing inner nodes if needed."""
        if self._dirty:
            for d in range(self.depth - 1, -1, -1):
                below = self._levels[d + 1]
                self._levels[d] = [
                    xxhash.xxh3_64_intdigest(
                        below[2 * i].to_bytes(8, "little") + below[2 * i + 1].to_bytes(8, "little")
                    )
                    for i in range(1 << d)
                ]
            self._dirty = False
        return list(self._levels[depth])

    @property
    def root(self) -> int:
        return self.level(0)[0]

    def leaf_range(self, leaf: int) -> tuple[int, int]:
        """The half-open ``key_hash`` range ``[low, high)`` a leaf covers (``high`` may be 2**64)."""
        width = 1 << (64 - self.depth)
        return leaf * width, (leaf + 1) * width


def differing_leaves(left: MerkleTree, right: MerkleTree) -> list[int]:
    """Leaves whose hashes differ, found by walking only differing subtrees from the root."""
    if left.depth != right.depth:
        raise InvalidArgument("trees of different depths cannot be compared")
    frontier = [0]
    for depth in range(left.depth + 1):
        ours, theirs = left.level(depth), right.level(depth)
        differing = [i for i in frontier if ours[i] != theirs[i]]
        if depth == left.depth:
            return differing
        frontier = [child for i in differing for child in (2 * i, 2 * i + 1)]
    return []
