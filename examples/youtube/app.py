"""The YouTube front end: upload, watch, search, suggest, with metadata behind a cache.

Theory of operation. ``upload`` takes a Snowflake id from the sequencer (time-ordered, unique
across sequencer nodes, no coordination per id), stores the source through the S3 API under
``<id>/source``, writes the metadata record (``PROCESSING``) to kv, enqueues one transcoding
job per rendition and indexes the title for search. Workers (``workers.py``) turn jobs into
renditions and report each one through ``record_rendition``.

Metadata reads go through the cache (read-through with a TTL): a hit costs one cache call, a
miss a kv quorum read whose siblings are merged, then a cache fill. Every metadata write is
a read-modify-write with the version context of the read, and deletes the cached copy after
the write, so a reader sees a stale record at most until the write lands (the classic
cache-aside race, a fill racing a delete, is bounded by the TTL).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from blocks.core.codec import pack
from blocks.core.errors import FailedPrecondition, InvalidArgument, NotFound
from examples.common import put_merging
from examples.ports import VersionedRead
from examples.youtube.metadata import Video, VideoStatus, decode, encode, merge
from examples.youtube.stack import BUCKET, Stack
from examples.youtube.transcode import RENDITIONS, Rendition
from examples.youtube.views import ViewCounters

__all__ = ["DEAD_JOBS", "JOBS", "CacheCounts", "YouTube", "rendition_key", "source_key"]

JOBS = "transcode"
DEAD_JOBS = "transcode-dead"
JOB_RECEIVES_MAX = 3
CACHE_TTL_S = 30.0


def source_key(video_id: int) -> str:
    return f"{video_id}/source"


def rendition_key(video_id: int, rendition: str) -> str:
    return f"{video_id}/{rendition}"


def _meta_key(video_id: int) -> str:
    return f"video:{video_id}"


@dataclass(slots=True)
class CacheCounts:
    hits: int = 0
    misses: int = 0
    sibling_merges: int = 0
    write_conflicts: int = 0
    """Writes a compare-and-set store refused (then merged and written again)."""


class YouTube:
    """The application over a started ``Stack``; see the module docstring."""

    def __init__(
        self,
        stack: Stack,
        *,
        rng: random.Random,
        renditions: tuple[Rendition, ...] = RENDITIONS,
        view_shards: int = 4,
    ) -> None:
        if not renditions:
            raise InvalidArgument("at least one rendition")
        self.stack = stack
        self.renditions = renditions
        self.views = ViewCounters(stack.counters, shards=view_shards, rng=rng)
        self.cache_counts = CacheCounts()

    async def setup(self) -> None:
        await self.stack.queue.create_queue(DEAD_JOBS)
        await self.stack.queue.create_queue(
            JOBS, visibility_ms=10_000, max_receives=JOB_RECEIVES_MAX, dead_letter=DEAD_JOBS
        )

    # -- writes ----------------------------------------------------------------------------

    async def upload(self, title: str, uploader: str, data: bytes) -> Video:
        video_id = await self.stack.sequencer.next_id()
        wanted = tuple(r.name for r in self.renditions)
        video = Video(video_id, title, uploader, len(data), wanted).moved_to(VideoStatus.PROCESSING)
        await self._put_object(source_key(video_id), data)
        await self.stack.kv.put(_meta_key(video_id), encode(video))
        for rendition in wanted:
            job = pack({"video": video_id, "rendition": rendition})
            await self.stack.queue.send(JOBS, job, dedup_id=f"{video_id}-{rendition}")
        await self.stack.blocking.run(
            lambda: self.stack.search.index_documents([(str(video_id), title)])
        )
        return video

    async def record_rendition(self, video_id: int, rendition: str) -> Video:
        return await self._update(video_id, lambda video: video.with_rendition(rendition))

    async def _update(self, video_id: int, change: Callable[[Video], Video]) -> Video:
        """Read with context, merge siblings, change, write back superseding what was read
        (``put_merging``: a refused write is merged into the newer record and retried)."""
        key = _meta_key(video_id)
        read = await self.stack.kv.get(key)
        if read.value is None:
            raise NotFound(f"no video {video_id}")
        if len(read.siblings) > 1:
            self.cache_counts.sibling_merges += 1
        video = change(merge(decode(s) for s in read.siblings))

        def remerge(current: VersionedRead) -> bytes:
            nonlocal video
            video = change(merge([video, *(decode(s) for s in current.siblings)]))
            return encode(video)

        conflicts = await put_merging(self.stack.kv, key, encode(video), read.context, remerge)
        self.cache_counts.write_conflicts += conflicts
        await self.stack.cache.delete(key)
        return video

    async def _put_object(self, key: str, data: bytes) -> None:
        def put() -> None:
            s3 = self.stack.open_objects()
            try:
                s3.put_object(BUCKET, key, data)
            finally:
                s3.close()

        await self.stack.blocking.run(put)

    async def _get_object(self, key: str) -> bytes:
        def get() -> bytes:
            s3 = self.stack.open_objects()
            try:
                return s3.get_object(BUCKET, key)
            finally:
                s3.close()

        return await self.stack.blocking.run(get)

    # -- reads -----------------------------------------------------------------------------

    async def get_video(self, video_id: int) -> Video:
        """Metadata through the cache; ``NotFound`` if there is no such video."""
        key = _meta_key(video_id)
        cached = await self.stack.cache.get(key)
        if isinstance(cached, bytes):
            self.cache_counts.hits += 1
            return decode(cached)
        self.cache_counts.misses += 1
        read = await self.stack.kv.get(key)
        if read.value is None:
            raise NotFound(f"no video {video_id}")
        if len(read.siblings) > 1:
            self.cache_counts.sibling_merges += 1
        video = merge(decode(s) for s in read.siblings)
        await self.stack.cache.put(key, encode(video), ttl=CACHE_TTL_S)
        return video

    async def watch(self, video_id: int, viewer: str, rendition: str = "720p") -> bytes:
        """Stream (here: fetch whole) one rendition and count the view."""
        video = await self.get_video(video_id)
        if rendition not in video.renditions:
            raise FailedPrecondition(f"video {video_id} has no {rendition} rendition yet")
        data = await self._get_object(rendition_key(video_id, rendition))
        await self.views.record(video_id, viewer)
        return data

    async def search(self, query: str, k: int = 5) -> list[tuple[int, float, str]]:
        """Titles matching ``query`` by BM25: ``(video_id, score, title)``."""
        hits = await self.stack.blocking.run(lambda: self.stack.search.search_text(query, k))
        return [(int(hit["id"]), float(hit["score"]), str(hit["text"])) for hit in hits]

    async def suggest(self, prefix: str, k: int = 5) -> list[str]:
        """Completions of a half-typed query, learned from what people searched."""
        completions = await self.stack.blocking.run(lambda: self.stack.search.suggest(prefix, k))
        return [phrase for phrase, _count in completions]
