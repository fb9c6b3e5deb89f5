"""Ketama placement, compatible with libketama, so memcached users' keys land where they did.

Theory of operation (libketama's continuum, 2007): each server, named ``host:port``, gets
``floor(40 * n * weight / total_weight)`` MD5 digests of the strings ``"<server>-<i>"``; each
16-byte digest yields four 32-bit points (bytes read little-endian in groups of four). The
points, sorted, form a circle of 2^32 positions. A key's position is the first four bytes of
MD5(key), little-endian; it belongs to the first point at or after it, wrapping to the first
point. With equal weights every server has 160 points.

MD5 is used only because compatibility demands it; it is not a security boundary here.
``preference_list`` walks on clockwise to collect distinct servers for replicas, exactly as
the first choice is made, so the owner is always first.

This is not ``blocks.core.hashing.HashRing`` with another hash: libketama gives each server a
number of points that depends on the total weight (so adding a server re-spreads every
server's points), takes the first point *at or after* a key's position and lets the first
writer keep a collided point, where ``HashRing`` keeps a fixed number of points per node,
takes the first point strictly after and breaks collisions by name. Either placement on the
other's ring would move keys (the libketama test vectors in ``tests/cache`` pin this one).
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Mapping

from blocks.core.errors import InvalidArgument, NotFound
from blocks.core.hashing import distinct_clockwise, key_bytes

__all__ = ["KetamaRing", "ketama_hash"]

_POINTS_PER_DIGEST = 4
_DIGESTS_PER_SERVER = 40


def _check_server(name: object, weight: object) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidArgument("server names must be non-empty strings")
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
        raise InvalidArgument(f"weight of {name!r} must be an integer >= 1")


def ketama_hash(key: bytes | str) -> int:
    """A key's position on the continuum: MD5's first four bytes, little-endian."""
    digest = hashlib.md5(key_bytes(key), usedforsecurity=False).digest()
    return int.from_bytes(digest[0:4], "little")


class KetamaRing:
    """The libketama continuum over ``host:port`` server names with integer weights."""

    __slots__ = ("_owners", "_points", "_weights")

    def __init__(self, servers: Mapping[str, int] | list[str]) -> None:
        weights = dict.fromkeys(servers, 1) if isinstance(servers, list) else dict(servers)
        for name, weight in weights.items():
            _check_server(name, weight)
        self._weights = weights
        self._points: list[int] = []
        self._owners: list[str] = []
        self._build()

    def _build(self) -> None:
        total = sum(self._weights.values())
        count = len(self._weights)
        if count == 0:
            self._points, self._owners = [], []
            return
        continuum: dict[int, str] = {}
        for name, weight in self._weights.items():
            digests = math.floor(weight / total * _DIGESTS_PER_SERVER * count)
            for index in range(digests):
                digest = hashlib.md5(f"{name}-{index}".encode(), usedforsecurity=False).digest()
                for group in range(_POINTS_PER_DIGEST):
                    point = int.from_bytes(digest[4 * group : 4 * group + 4], "little")
                    continuum.setdefault(point, name)  # first writer keeps a collided point
        ordered = sorted(continuum.items())
        self._points = [point for point, _ in ordered]
        self._owners = [owner for _, owner in ordered]

    @property
    def servers(self) -> list[str]:
        return list(self._weights)

    def __len__(self) -> int:
        return len(self._weights)

    def __contains__(self, server: object) -> bool:
        return server in self._weights

    def add(self, server: str, weight: int = 1) -> None:
        """Add (or re-weigh) ``server`` and rebuild the continuum."""
        _check_server(server, weight)
        self._weights[server] = weight
        self._build()

    def remove(self, server: str) -> None:
        if server not in self._weights:
            raise NotFound(f"no server {server!r}")
        del self._weights[server]
        self._build()

    def _start(self, key: bytes | str) -> int:
        if not self._points:
            raise NotFound("the ring has no servers")
        index = bisect.bisect_left(self._points, ketama_hash(key))
        return 0 if index == len(self._points) else index

    def owner(self, key: bytes | str) -> str:
        """The server libketama would pick for ``key``."""
        return self._owners[self._start(key)]

    def preference_list(self, key: bytes | str, n: int) -> list[str]:
        """Up to ``n`` distinct servers clockwise from ``key``, owner first."""
        if n < 1:
            raise InvalidArgument(f"n must be >= 1, got {n}")
        return distinct_clockwise(self._owners, self._start(key), min(n, len(self._weights)))
