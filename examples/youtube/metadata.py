"""Video metadata as stored in kv, and how concurrent versions of it merge (pure).

Theory of operation. A video's record moves through explicit states, ``UPLOADED`` ->
``PROCESSING`` -> ``READY`` (or ``FAILED``), by the table ``TRANSITIONS``. Several transcoding
workers finish renditions of the same video at the same time and each writes the record back
with the version context of the copy it read; kv keeps writes that did not see each other as
siblings instead of letting the last one win. ``merge`` folds siblings into one record:
renditions are a set (union), the status is the furthest along, and everything else is
immutable after upload. Because merge is commutative, associative and idempotent, any
worker may resolve siblings and they all get the same answer: no rendition is ever lost.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace

from blocks.core.codec import pack, unpack
from blocks.core.errors import Corruption, FailedPrecondition, InvalidArgument

__all__ = ["TITLE_CHARS_MAX", "TRANSITIONS", "Video", "VideoStatus", "decode", "encode", "merge"]

TITLE_CHARS_MAX = 200
METADATA_BYTES_MAX = 64 * 1024


class VideoStatus(enum.Enum):
    UPLOADED = "uploaded"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


TRANSITIONS: dict[VideoStatus, frozenset[VideoStatus]] = {
    VideoStatus.UPLOADED: frozenset({VideoStatus.PROCESSING, VideoStatus.FAILED}),
    VideoStatus.PROCESSING: frozenset({VideoStatus.READY, VideoStatus.FAILED}),
    VideoStatus.READY: frozenset(),
    VideoStatus.FAILED: frozenset(),
}
_RANK = {VideoStatus.UPLOADED: 0, VideoStatus.PROCESSING: 1, VideoStatus.READY: 2}
_RANK[VideoStatus.FAILED] = 3  # a failure wins over any concurrent progress


@dataclass(frozen=True, slots=True)
class Video:
    """One video. ``renditions`` is sorted; ``wanted`` lists every rendition to be made."""

    video_id: int
    title: str
    uploader: str
    source_bytes: int
    wanted: tuple[str, ...]
    status: VideoStatus = VideoStatus.UPLOADED
    renditions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 < len(self.title) <= TITLE_CHARS_MAX:
            raise InvalidArgument(f"title must have 1..{TITLE_CHARS_MAX} characters")
        if self.video_id <= 0 or self.source_bytes < 0:
            raise InvalidArgument("video_id must be positive and source_bytes >= 0")
        if tuple(sorted(set(self.renditions))) != self.renditions:
            raise InvalidArgument("renditions must be sorted and distinct")

    def moved_to(self, status: VideoStatus) -> Video:
        """This video in ``status``; an illegal transition raises and changes nothing."""
        if status is self.status:
            return self
        if status not in TRANSITIONS[self.status]:
            raise FailedPrecondition(f"video cannot go from {self.status.value} to {status.value}")
        return replace(self, status=status)

    def with_rendition(self, name: str) -> Video:
        """Record a finished rendition; the video is READY once every wanted one exists."""
        if name not in self.wanted:
            raise InvalidArgument(f"rendition {name!r} was not asked for")
        done = tuple(sorted({*self.renditions, name}))
        video = replace(self, renditions=done)
        if set(done) == set(self.wanted) and video.status is VideoStatus.PROCESSING:
            video = video.moved_to(VideoStatus.READY)
        return video


def merge(versions: Iterable[Video]) -> Video:
    """One record from concurrent versions of the same video (see the module docstring)."""
    items = list(versions)
    if not items:
        raise InvalidArgument("nothing to merge")
    first = items[0]
    if any(v.video_id != first.video_id for v in items):
        raise InvalidArgument("cannot merge different videos")
    renditions = tuple(sorted({name for v in items for name in v.renditions}))
    status = max((v.status for v in items), key=_RANK.__getitem__)
    if status is not VideoStatus.FAILED and set(renditions) == set(first.wanted):
        status = VideoStatus.READY
    return replace(first, renditions=renditions, status=status)


def encode(video: Video) -> bytes:
    return pack(
        {
            "id": video.video_id,
            "title": video.title,
            "uploader": video.uploader,
            "bytes": video.source_bytes,
            "wanted": list(video.wanted),
            "status": video.status.value,
            "renditions": list(video.renditions),
        },
        size_max=METADATA_BYTES_MAX,
    )


def decode(data: bytes) -> Video:
    """A record from kv; anything malformed is ``Corruption`` (we wrote it)."""
    try:
        raw = unpack(data, size_max=METADATA_BYTES_MAX)
        return Video(
            video_id=int(raw["id"]),
            title=str(raw["title"]),
            uploader=str(raw["uploader"]),
            source_bytes=int(raw["bytes"]),
            wanted=tuple(str(n) for n in raw["wanted"]),
            status=VideoStatus(raw["status"]),
            renditions=tuple(str(n) for n in raw["renditions"]),
        )
    except (InvalidArgument, KeyError, TypeError, ValueError) as error:
        raise Corruption(f"bad video record: {error}") from error
