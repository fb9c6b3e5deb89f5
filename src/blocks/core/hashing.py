"""Stable hashing and key placement: consistent-hash ring, jump hash, rendezvous hash.

Theory of operation. Every placement decision starts from ``key_hash``: xxh3-64 of the key's
bytes (``str`` keys are UTF-8 encoded). It is stable across processes, machines and Python
versions, unlike the builtin ``hash()``, which is salted per process.

Three placement schemes, for three situations:

* ``HashRing``: consistent hashing with virtual nodes. Each physical node owns
  ``vnodes * weight`` points on a 64-bit circle; a key belongs to the first point clockwise of
  its hash. Adding or removing a node moves only the keys in the arcs that node gains or loses
  (about 1/N of them), and ``preference_list`` walks clockwise to collect N *distinct*
  physical nodes for replication (Dynamo's preference list). Lookups are a binary search.
* ``jump_hash``: Lamping and Veach's jump consistent hash. No memory and perfectly even, but
  buckets are numbered 0..n-1 and only the last one can be removed: right for shards of a
  single system that grows by appending, wrong for a membership that changes arbitrarily.
* ``rendezvous``: highest-random-weight hashing. Each (key, node) pair gets a score and the
  top n nodes win. O(len(nodes)) per lookup but no ring to keep, even spread, and removing a
  node moves only the keys it held: good for a few dozen nodes.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence

import xxhash

from blocks.core.errors import InvalidArgument

__all__ = [
    "DEFAULT_VNODES",
    "HashRing",
    "distinct_clockwise",
    "jump_hash",
    "key_bytes",
    "key_hash",
    "rendezvous",
]

DEFAULT_VNODES = 256
"""Virtual nodes per unit of weight. 256 keeps the busiest node within about 15% of the mean
for 10 nodes (measured in docs/core.md); fewer saves memory at the cost of balance."""

_MASK64 = (1 << 64) - 1
_WEIGHT_MAX = 1_000
_NODES_MAX = 100_000


def key_bytes(key: bytes | str) -> bytes:
    """A key as the bytes every hash here reads: ``str`` as UTF-8, a ``bytearray`` or
    ``memoryview`` copied; ``InvalidArgument`` for anything else."""
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, bytearray | memoryview):
        return bytes(key)
    raise InvalidArgument(f"key must be bytes or str, got {type(key).__name__}")


def key_hash(key: bytes | str) -> int:
    """xxh3-64 of ``key`` (UTF-8 for ``str``), as an unsigned 64-bit integer."""
    return xxhash.xxh3_64_intdigest(key_bytes(key))


def distinct_clockwise(owners: Sequence[str], start: int, n: int) -> list[str]:
    """The first ``n`` distinct names in ``owners`` (a ring's owner of each point, in point
    order) going clockwise from index ``start``, wrapping once: a preference list. Fewer when
    the ring holds fewer names."""
    chosen: list[str] = []
    total = len(owners)
    for step in range(total):
        owner = owners[(start + step) % total]
        if owner not in chosen:
            chosen.append(owner)
            if len(chosen) == n:
                break
    return chosen


def _point_hash(node: str, index: int) -> int:
    return xxhash.xxh3_64_intdigest(f"{node}#{index}".encode())


class HashRing:
    """A consistent-hash ring of named nodes with virtual nodes and weights.

    ``weights`` (default 1 for each node) scales a node's share: a node of weight 2 gets twice
    the points and so about twice the keys. The ring is not thread-safe; callers that change
    membership concurrently with lookups must hold their own lock (or build a new ring and swap
    it in, which is what the cluster drivers do).
    """

    __slots__ = ("_owners", "_points", "_vnodes", "_weights")

    def __init__(
        self,
        nodes: Iterable[str] = (),
        vnodes: int = DEFAULT_VNODES,
        weights: Mapping[str, int] | None = None,
    ) -> None:
        if not isinstance(vnodes, int) or not 1 <= vnodes <= 10_000:
            raise InvalidArgument(f"vnodes must be an int in [1, 10000], got {vnodes!r}")
        self._vnodes = vnodes
        self._weights: dict[str, int] = {}
        self._points: list[int] = []  # sorted ring positions
        self._owners: list[str] = []  # _owners[i] owns _points[i]
        weights = dict(weights or {})
        for node in nodes:
            self.add(node, weights.pop(node, 1))
        if weights:
            raise InvalidArgument(f"weights given for unknown nodes: {sorted(weights)}")

    @property
    def nodes(self) -> list[str]:
        """The physical nodes, sorted by name."""
        return sorted(self._weights)

    @property
    def vnodes(self) -> int:
        return self._vnodes

    def weight(self, node: str) -> int:
        try:
            return self._weights[node]
        except KeyError:
            raise InvalidArgument(f"unknown node {node!r}") from None

    def __len__(self) -> int:
        return len(self._weights)

    def __contains__(self, node: object) -> bool:
        return node in self._weights

    def add(self, node: str, weight: int = 1) -> None:
        """Add ``node`` with ``weight`` (an int in [1, 1000]). Adding a present node raises."""
        if not isinstance(node, str) or not node:
            raise InvalidArgument("node must be a non-empty str")
        if (
            not isinstance(weight, int)
            or isinstance(weight, bool)
            or not 1 <= weight <= _WEIGHT_MAX
        ):
            raise InvalidArgument(f"weight must be an int in [1, {_WEIGHT_MAX}], got {weight!r}")
        if node in self._weights:
            raise InvalidArgument(f"node {node!r} is already on the ring")
        if len(self._weights) >= _NODES_MAX:
            raise InvalidArgument(f"a ring holds at most {_NODES_MAX} nodes")
        self._weights[node] = weight
        for index in range(self._vnodes * weight):
            point = _point_hash(node, index)
            at = bisect.bisect_left(self._points, point)
            # Two nodes hashing to one point (probability ~2^-64 per pair) resolve by name so
            # every process builds the same ring whatever the order of adds.
            while at < len(self._points) and self._points[at] == point and self._owners[at] < node:
                at += 1
            self._points.insert(at, point)
            self._owners.insert(at, node)

    def remove(self, node: str) -> None:
        """Remove ``node``; its keys move to the next points clockwise. Unknown nodes raise."""
        if node not in self._weights:
            raise InvalidArgument(f"unknown node {node!r}")
        del self._weights[node]
        keep = [i for i, owner in enumerate(self._owners) if owner != node]
        self._points = [self._points[i] for i in keep]
        self._owners = [self._owners[i] for i in keep]

    def _start(self, key: bytes | str) -> int:
        if not self._points:
            raise InvalidArgument("the ring has no nodes")
        at = bisect.bisect_right(self._points, key_hash(key))
        return at if at < len(self._points) else 0

    def owner(self, key: bytes | str) -> str:
        """The node owning ``key``: the first point clockwise of its hash."""
        return self._owners[self._start(key)]

    def preference_list(self, key: bytes | str, n: int) -> list[str]:
        """The first ``n`` distinct physical nodes clockwise from ``key``'s hash.

        The first entry is ``owner(key)``. Raises ``InvalidArgument`` if ``n`` is not in
        [1, number of nodes].
        """
        if not isinstance(n, int) or not 1 <= n <= len(self._weights):
            raise InvalidArgument(f"n must be in [1, {len(self._weights)}], got {n!r}")
        return distinct_clockwise(self._owners, self._start(key), n)

    def __repr__(self) -> str:
        return f"HashRing(nodes={self.nodes!r}, vnodes={self._vnodes})"


def jump_hash(key: bytes | str | int, buckets: int) -> int:
    """Jump consistent hash: the bucket in [0, buckets) for ``key``.

    Growing from n to n+1 buckets moves about 1/(n+1) of the keys, all to the new bucket.
    ``int`` keys are used as the 64-bit state directly; other keys go through ``key_hash``.
    """
    if not isinstance(buckets, int) or isinstance(buckets, bool) or buckets < 1:
        raise InvalidArgument(f"buckets must be a positive int, got {buckets!r}")
    if isinstance(key, int) and not isinstance(key, bool):
        state = key & _MASK64
    else:
        state = key_hash(key)  # type: ignore[arg-type]
    bucket, jump = -1, 0
    while jump < buckets:
        bucket = jump
        state = (state * 2862933555777941757 + 1) & _MASK64
        jump = int((bucket + 1) * ((1 << 31) / ((state >> 33) + 1)))
    return bucket


def rendezvous(key: bytes | str, nodes: Iterable[str], n: int = 1) -> list[str]:
    """Highest-random-weight hashing: the ``n`` nodes with the highest score for ``key``.

    Scores are xxh3-64 of the key bytes followed by the node name, so they are stable across
    processes. Ties (astronomically rare) break by node name.
    """
    key_data = key_bytes(key)
    candidates = list(dict.fromkeys(nodes))
    if not all(isinstance(node, str) and node for node in candidates):
        raise InvalidArgument("nodes must be non-empty strings")
    if not isinstance(n, int) or not 1 <= n <= len(candidates):
        raise InvalidArgument(f"n must be in [1, {len(candidates)}], got {n!r}")
    scored = sorted(
        candidates,
        key=lambda node: (-xxhash.xxh3_64_intdigest(key_data + b"\x00" + node.encode()), node),
    )
    return scored[:n]
