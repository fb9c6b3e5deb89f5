"""The YouTube design end to end, checked against what the script did."""

from __future__ import annotations

import asyncio
import random

from hypothesis import given
from hypothesis import strategies as st

from examples.youtube.metadata import Video, VideoStatus, decode, encode, merge
from examples.youtube.session import UPLOADS, run_session
from examples.youtube.transcode import RENDITIONS


def expected_rendition(source: bytes, name: str, step: int) -> bytes:
    # Written out here rather than calling transcode(): header, padded name, every step-th byte.
    return b"FAKEVID1" + name.encode().ljust(8, b" ") + source[::step]


def test_session_uploads_transcodes_counts_and_finds() -> None:
    lines: list[str] = []
    report = asyncio.run(run_session(lines.append, seed=3, views=120))

    assert len(report.ids) == len(UPLOADS)
    assert report.ids == sorted(report.ids) and len(set(report.ids)) == len(report.ids)
    for video_id in report.ids:
        video = report.videos[video_id]
        assert video.status is VideoStatus.READY
        assert video.renditions == tuple(sorted(r.name for r in RENDITIONS))
        for rendition in RENDITIONS:
            got = report.watched[(video_id, rendition.name)]
            want = expected_rendition(report.sources[video_id], rendition.name, rendition.step)
            assert got == want
    assert report.jobs_done >= len(UPLOADS) * len(RENDITIONS)

    for video_id in report.ids:
        assert report.counted_views[video_id] == report.true_views[video_id]
        true_unique = len(report.true_viewers[video_id])
        assert abs(report.counted_viewers[video_id] - true_unique) <= max(2, true_unique // 20)
    most_watched = max(report.ids, key=lambda i: report.true_views[i])
    assert report.trending[0][0] == most_watched

    by_title = {report.videos[i].title: i for i in report.ids}
    assert report.search_hits["cat piano"][0] == by_title["Cat plays the piano"]
    assert report.search_hits["python tutorial"] == [by_title["Learn Python in ten minutes"]]
    assert set(report.search_hits["cat"]) == {
        by_title["Cat plays the piano"],
        by_title["Cat video compilation"],
    }
    assert report.suggestions["cat p"] == ["cat piano"]
    assert report.suggestions["c"][0] == "cat piano"  # searched most often

    assert report.cache.hits > 0 and report.cache.misses >= len(UPLOADS)
    assert any("trending" in line for line in lines)


renditions = st.lists(st.sampled_from([r.name for r in RENDITIONS]), unique=True).map(
    lambda names: tuple(sorted(names))
)
statuses = st.sampled_from([VideoStatus.PROCESSING, VideoStatus.READY])


@given(st.lists(st.tuples(renditions, statuses), min_size=1, max_size=5), st.randoms())
def test_merge_keeps_every_rendition_in_any_order(
    versions: list[tuple[tuple[str, ...], VideoStatus]], rng: random.Random
) -> None:
    wanted = tuple(r.name for r in RENDITIONS)
    videos = [Video(1, "t", "u", 10, wanted, status, names) for names, status in versions]
    merged = merge(videos)
    shuffled = list(videos)
    rng.shuffle(shuffled)
    assert merge(shuffled) == merged
    assert merge([merged, *videos]) == merged
    union = {name for names, _ in versions for name in names}
    assert set(merged.renditions) == union
    assert (merged.status is VideoStatus.READY) == (
        union == set(wanted) or any(s is VideoStatus.READY for _, s in versions)
    )
    assert decode(encode(merged)) == merged
