"""View counts, unique viewers and trending videos over the counters servers.

Theory of operation. A popular video is watched by many front ends at once, and one counter
per video on one node would serialize all of them. So the view count of a video is a
*sharded counter*: ``shards`` cells named ``views:<id>:<shard>``, each placed on a counters
node by a consistent-hash ring; a view increments one cell chosen by the injected
``random.Random`` and a read sums all cells (exact, because every cell is an exact counter).
Unique viewers are a HyperLogLog per video (``viewers:<id>``, on the node owning that name):
a few KiB per video whatever the audience, about 1% error. Trending is one count-min top-k
over every view (``trending``): approximate counts, but the heavy hitters are the point.
"""

from __future__ import annotations

import asyncio
import random

from blocks.core.errors import InvalidArgument
from blocks.core.hashing import HashRing
from examples.ports import CountersStore

__all__ = ["SHARDS_MAX", "TRENDING", "ViewCounters"]

SHARDS_MAX = 64
TRENDING = "trending"


class ViewCounters:
    """``await views.record(video_id, viewer)``; ``await views.views(video_id)``."""

    def __init__(self, nodes: dict[str, CountersStore], *, shards: int, rng: random.Random) -> None:
        if not nodes or not 1 <= shards <= SHARDS_MAX:
            raise InvalidArgument(f"need counters nodes and 1..{SHARDS_MAX} shards")
        self._nodes = dict(nodes)
        self._ring = HashRing(self._nodes)
        self.shards = shards
        self._rng = rng

    def _node(self, name: str) -> CountersStore:
        return self._nodes[self._ring.owner(name)]

    def cell(self, video_id: int, shard: int) -> str:
        return f"views:{video_id}:{shard}"

    def placement(self, video_id: int) -> dict[str, list[int]]:
        """Which node holds which cells of a video's count (for the narration)."""
        where: dict[str, list[int]] = {}
        for shard in range(self.shards):
            where.setdefault(self._ring.owner(self.cell(video_id, shard)), []).append(shard)
        return where

    async def record(self, video_id: int, viewer: str) -> None:
        """One view: a random cell of the count, the viewer into the HLL, the video into
        trending. The three go to (possibly) different nodes, concurrently."""
        cell = self.cell(video_id, self._rng.randrange(self.shards))
        distinct = f"viewers:{video_id}"
        await asyncio.gather(
            self._node(cell).increment(cell),
            self._node(distinct).add_distinct(distinct, [viewer]),
            self._node(TRENDING).add_frequent(TRENDING, [str(video_id)]),
        )

    async def views(self, video_id: int) -> int:
        cells = [self.cell(video_id, shard) for shard in range(self.shards)]
        values = await asyncio.gather(*(self._node(c).value(c) for c in cells))
        return sum(values)

    async def unique_viewers(self, video_id: int) -> int:
        name = f"viewers:{video_id}"
        return await self._node(name).count_distinct(name)

    async def trending(self, k: int) -> list[tuple[int, int]]:
        """The ``k`` most watched videos as ``(video_id, estimated views)``."""
        top = await self._node(TRENDING).top_k(TRENDING, k)
        return [(int(item.decode()), count) for item, count in top]
