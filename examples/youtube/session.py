"""A scripted YouTube session: three uploads, transcoding, a burst of views, search.

``run_session`` starts the whole stack in a temporary directory, plays the script while
narrating through ``say``, stops everything and returns a ``YouTubeReport`` holding both what
the script did (the ground truth: bytes uploaded, views made, by whom) and what the system
answered (bytes read back, counts, trending, search hits), so a test can compare the two.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from examples.backends import Backend, Placement, parse_backend
from examples.common import Say, Services, wait_for_condition
from examples.youtube.app import CacheCounts, YouTube
from examples.youtube.metadata import Video, VideoStatus
from examples.youtube.stack import start_stack
from examples.youtube.transcode import make_video
from examples.youtube.workers import TranscodeWorker

__all__ = ["SEARCHES", "UPLOADS", "YouTubeReport", "run_session"]

UPLOADS: tuple[tuple[str, str, int], ...] = (
    ("Cat plays the piano", "alice", 24),
    ("Cat video compilation", "bob", 16),
    ("Learn Python in ten minutes", "carol", 20),
)
"""(title, uploader, seconds of footage)."""
POPULARITY = (6, 3, 1)
SEARCHES = ("cat piano", "cat", "cat piano", "python tutorial", "cat videos", "cat piano")
VIEWERS = 120
VIEW_BATCH = 20
READY_TIMEOUT_S = 120.0  # a bound for a failing run; a loaded 2-core machine needed over 20 s


@dataclass(slots=True)
class YouTubeReport:
    ids: list[int] = field(default_factory=list)
    sources: dict[int, bytes] = field(default_factory=dict)
    videos: dict[int, Video] = field(default_factory=dict)
    watched: dict[tuple[int, str], bytes] = field(default_factory=dict)
    true_views: Counter[int] = field(default_factory=Counter)
    true_viewers: dict[int, set[str]] = field(default_factory=dict)
    counted_views: dict[int, int] = field(default_factory=dict)
    counted_viewers: dict[int, int] = field(default_factory=dict)
    trending: list[tuple[int, int]] = field(default_factory=list)
    search_hits: dict[str, list[int]] = field(default_factory=dict)
    suggestions: dict[str, list[str]] = field(default_factory=dict)
    jobs_done: int = 0
    cache: CacheCounts = field(default_factory=CacheCounts)
    seconds: float = 0.0
    placement: Placement = field(default_factory=lambda: Placement(Backend.CLUSTER))

    def summary(self) -> dict[str, object]:
        """The report as plain JSON-able data (bytes reduced to sizes)."""
        return {
            "ids": self.ids,
            "videos": {
                str(i): {"title": v.title, "status": v.status.value, "renditions": v.renditions}
                for i, v in self.videos.items()
            },
            "views": {str(i): self.counted_views[i] for i in self.ids},
            "unique_viewers": {str(i): self.counted_viewers[i] for i in self.ids},
            "trending": self.trending,
            "search_hits": self.search_hits,
            "suggestions": self.suggestions,
            "jobs_done": self.jobs_done,
            "cache": {"hits": self.cache.hits, "misses": self.cache.misses},
            "sibling_merges": self.cache.sibling_merges,
            "write_conflicts": self.cache.write_conflicts,
            "seconds": round(self.seconds, 2),
            **self.placement.summary(),
        }


async def run_session(
    say: Say,
    *,
    seed: int = 7,
    views: int = 300,
    workers: int = 2,
    backend: Backend | str = Backend.CLUSTER,
) -> YouTubeReport:
    """Run the script once on ``backend`` (see the module docstring)."""
    started = time.monotonic()
    report = YouTubeReport(placement=Placement(parse_backend(backend)))
    with tempfile.TemporaryDirectory(prefix="examples-youtube-") as directory:
        async with Services() as services:
            stack = await start_stack(services, Path(directory), report.placement.backend)
            report.placement = stack.placement
            for line in stack.placement.lines():
                say(line)
            app = YouTube(stack, rng=random.Random(seed))
            await app.setup()
            stop = asyncio.Event()
            crew = [TranscodeWorker(f"worker-{i + 1}", app) for i in range(workers)]
            tasks = [asyncio.create_task(worker.run(stop)) for worker in crew]
            try:
                await _upload_all(say, app, report, random.Random(seed))
                await _wait_ready(say, app, report, crew, started)
                await _watch(say, app, report, random.Random(seed + 1), views)
                await _discover(say, app, report)
            finally:
                stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)
            report.jobs_done = sum(worker.done for worker in crew)
            report.cache = app.cache_counts
    report.seconds = time.monotonic() - started
    say(f"everything stopped; session took {report.seconds:.1f}s")
    return report


async def _upload_all(say: Say, app: YouTube, report: YouTubeReport, rng: random.Random) -> None:
    for title, uploader, seconds in UPLOADS:
        data = make_video(title, seconds, rng)
        video = await app.upload(title, uploader, data)
        fields = await app.stack.sequencer.decode(video.video_id)
        report.ids.append(video.video_id)
        report.sources[video.video_id] = data
        seen = await app.get_video(video.video_id)  # fills the cache with PROCESSING
        say(
            f"upload {title!r} by {uploader}: id {video.video_id} (snowflake: ms {fields.unix_ms}, "
            f"worker {fields.worker_id}, seq {fields.sequence}); {len(data) // 1024} KiB to S3; "
            f"{len(video.wanted)} jobs queued; status {seen.status.value}"
        )


async def _wait_ready(
    say: Say, app: YouTube, report: YouTubeReport, crew: list[TranscodeWorker], started: float
) -> None:
    async def all_ready() -> bool:
        videos = [await app.get_video(i) for i in report.ids]
        return all(v.status is VideoStatus.READY for v in videos)

    ready = await wait_for_condition(all_ready, timeout_s=READY_TIMEOUT_S, interval_s=0.05)
    for video_id in report.ids:
        report.videos[video_id] = await app.get_video(video_id)
    jobs = ", ".join(f"{w.name} did {w.done}" for w in crew)
    say(
        f"transcoding: {jobs}; all ready: {ready} after {time.monotonic() - started:.1f}s; "
        f"concurrent metadata writes merged from siblings {app.cache_counts.sibling_merges} "
        f"times, after a refused write {app.cache_counts.write_conflicts} times"
    )
    for video_id in report.ids:
        for rendition in report.videos[video_id].renditions:
            data = await app.watch(video_id, "qa-bot", rendition)
            report.watched[(video_id, rendition)] = data
            report.true_views[video_id] += 1
            report.true_viewers.setdefault(video_id, set()).add("qa-bot")
    sizes = ", ".join(
        f"{name} {len(report.watched[(report.ids[0], name)]) // 1024} KiB"
        for name in report.videos[report.ids[0]].renditions
    )
    say(f"renditions of {report.ids[0]} read back: {sizes}")


async def _watch(
    say: Say, app: YouTube, report: YouTubeReport, rng: random.Random, views: int
) -> None:
    plays: list[tuple[int, str, str]] = []
    for _ in range(views):
        video_id = rng.choices(report.ids, weights=POPULARITY)[0]
        viewer = f"viewer-{rng.randrange(VIEWERS)}"
        rendition = rng.choice(report.videos[video_id].renditions)
        plays.append((video_id, viewer, rendition))
        report.true_views[video_id] += 1
        report.true_viewers.setdefault(video_id, set()).add(viewer)
    began = time.monotonic()
    for start in range(0, len(plays), VIEW_BATCH):
        batch = plays[start : start + VIEW_BATCH]
        await asyncio.gather(*(app.watch(v, viewer, r) for v, viewer, r in batch))
    elapsed = time.monotonic() - began
    say(f"{views} views by up to {VIEWERS} viewers in {elapsed:.1f}s, {VIEW_BATCH} at a time")
    for video_id in report.ids:
        report.counted_views[video_id] = await app.views.views(video_id)
        report.counted_viewers[video_id] = await app.views.unique_viewers(video_id)
        cells = app.views.placement(video_id)
        say(
            f"  {report.videos[video_id].title!r}: {report.counted_views[video_id]} views "
            f"(cells {cells}), ~{report.counted_viewers[video_id]} unique viewers "
            f"(true {len(report.true_viewers[video_id])})"
        )
    report.trending = await app.views.trending(3)
    say("trending: " + ", ".join(f"{report.videos[i].title!r} ~{n}" for i, n in report.trending))


async def _discover(say: Say, app: YouTube, report: YouTubeReport) -> None:
    for query in SEARCHES:
        hits = await app.search(query, 3)
        report.search_hits[query] = [video_id for video_id, _, _ in hits]
    for query in dict.fromkeys(SEARCHES):
        shown = ", ".join(f"{t!r}" for _, _, t in await app.search(query, 2))
        say(f"search {query!r} (BM25): {shown}")
    for prefix in ("c", "cat p", "py"):
        report.suggestions[prefix] = await app.suggest(prefix, 3)
        say(f"typeahead {prefix!r}: {report.suggestions[prefix]}")
    counts = app.cache_counts
    say(f"metadata cache: {counts.hits} hits, {counts.misses} misses (kv reads)")
