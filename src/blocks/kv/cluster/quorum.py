"""Quorum settings, sloppy-quorum target choice and the hints a node owes: pure data.

``QuorumConfig`` holds N, R and W and the core's bounds. ``plan_targets`` is the sloppy
quorum: each home node of a key that is healthy takes a request itself; each one that is not
is replaced by the next healthy node past the home list (a *spare*), which stores the write
with a hint naming the home node it stands in for. ``HintSet`` is what a node owes: ``(owner,
key)`` pairs, indexed by key, iterated in an order that ``to_back`` rotates so that one
unanswered hand-off does not starve the others. ``Placements`` remembers each key's order of
nodes on one ring (a ring walk per key is the cost of every request and of every key of an
anti-entropy tree); a new ring starts it afresh.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from blocks.core.errors import InvalidArgument
from blocks.core.hashing import HashRing

__all__ = ["HintSet", "Placements", "QuorumConfig", "plan_targets"]

PLACEMENTS_MAX = 1 << 17
"""Most keys ``Placements`` remembers; past it, it starts afresh (a bound, not an LRU)."""


@dataclass(frozen=True, slots=True)
class QuorumConfig:
    replicas: int = 3
    read_quorum: int = 2
    write_quorum: int = 2
    timeout_s: float = 1.0
    lww: bool = False
    merkle_depth: int = 8
    pending_max: int = 10_000
    hints_max: int = 100_000
    handoff_batch_max: int = 64

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise InvalidArgument("replicas must be >= 1")
        for name, value in (("read_quorum", self.read_quorum), ("write_quorum", self.write_quorum)):
            if not 1 <= value <= self.replicas:
                raise InvalidArgument(f"{name} must be in [1, replicas={self.replicas}]")
        if self.timeout_s <= 0:
            raise InvalidArgument("timeout_s must be > 0")


def plan_targets(
    order: list[str], healthy: set[str], replicas: int
) -> list[tuple[str, str | None]]:
    """``(node, hint_owner)`` per home node: itself if healthy, else the next healthy spare."""
    spares = [node for node in order[replicas:] if node in healthy]
    targets: list[tuple[str, str | None]] = []
    for home in order[:replicas]:
        if home in healthy:
            targets.append((home, None))
        elif spares:
            targets.append((spares.pop(0), home))
    return targets


class Placements:
    """``ring.preference_list(key, count)``, remembered per key while ``ring`` is the same
    object (rings are replaced, never changed in place). Callers must not mutate the lists."""

    __slots__ = ("_only", "_orders", "_ring")

    def __init__(self) -> None:
        self._ring: HashRing | None = None
        self._orders: dict[bytes, list[str]] = {}
        self._only: list[str] | None = None  # a one-node ring's order, the same for every key

    def of(self, ring: HashRing, key: bytes, count: int) -> list[str]:
        if ring is not self._ring:
            self._ring, self._orders = ring, {}
            self._only = ring.preference_list(b"", 1) if len(ring) == 1 else None
        if self._only is not None and count >= 1:
            return self._only
        order = self._orders.get(key)
        if order is None:
            if len(self._orders) >= PLACEMENTS_MAX:
                self._orders.clear()
            order = self._orders[key] = ring.preference_list(key, count) if len(ring) else []
        return order


class HintSet:
    """``(owner, key)`` pairs with an index by key, so per-key questions are O(1)."""

    __slots__ = ("_by_key", "_size")

    def __init__(self) -> None:
        self._by_key: dict[bytes, set[str]] = {}
        self._size = 0

    def add(self, hint: tuple[str, bytes]) -> None:
        owner, key = hint
        owners = self._by_key.setdefault(key, set())
        if owner not in owners:
            owners.add(owner)
            self._size += 1

    def discard(self, hint: tuple[str, bytes]) -> None:
        owner, key = hint
        owners = self._by_key.get(key)
        if owners is not None and owner in owners:
            owners.remove(owner)
            self._size -= 1
            if not owners:
                del self._by_key[key]

    def owners(self, key: bytes) -> set[str]:
        return self._by_key.get(key, set())

    def to_back(self, key: bytes) -> None:
        """Move ``key``'s hints to the end of the iteration order."""
        owners = self._by_key.pop(key, None)
        if owners is not None:
            self._by_key[key] = owners

    def clear(self) -> None:
        self._by_key.clear()
        self._size = 0

    def __contains__(self, hint: object) -> bool:
        if not isinstance(hint, tuple) or len(hint) != 2:
            return False
        return hint[0] in self._by_key.get(hint[1], ())

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        for key, owners in list(self._by_key.items()):
            for owner in sorted(owners):
                yield owner, key

    def __len__(self) -> int:
        return self._size
