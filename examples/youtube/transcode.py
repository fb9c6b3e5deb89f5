"""A fake transcoder and fake videos: deterministic bytes in, renditions out (pure).

Theory of operation. A real transcoder decodes frames and re-encodes them smaller; what the
rest of the design cares about is only that each rendition is a different, smaller object
derived from the source, so here a rendition is a short header naming it followed by every
``step``-th byte of the source. That keeps the example's storage traffic shaped like the real
thing (the source is read once per job, each rendition is written once) while a test can
recompute every rendition independently and compare bytes.

Videos are made by ``make_video`` from a seeded ``random.Random``: a header with the title
and a run of pseudo-random "frames", so uploads are reproducible.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from blocks.core.errors import InvalidArgument

__all__ = [
    "FRAME_BYTES",
    "RENDITIONS",
    "VIDEO_BYTES_MAX",
    "Rendition",
    "make_video",
    "rendition_named",
    "transcode",
]

FRAME_BYTES = 4096
VIDEO_BYTES_MAX = 64 * 1024 * 1024
"""The largest source the fake transcoder accepts (it holds it in memory)."""
MAGIC = b"FAKEVID1"


@dataclass(frozen=True, slots=True)
class Rendition:
    """One output format: ``name`` like "720p", keeping every ``step``-th source byte."""

    name: str
    step: int

    def __post_init__(self) -> None:
        if not self.name or not 1 <= self.step <= 64:
            raise InvalidArgument("a rendition needs a name and a step in [1, 64]")


RENDITIONS: tuple[Rendition, ...] = (
    Rendition("1080p", 1),
    Rendition("720p", 2),
    Rendition("360p", 4),
    Rendition("144p", 8),
)


def rendition_named(name: str) -> Rendition:
    for rendition in RENDITIONS:
        if rendition.name == name:
            return rendition
    raise InvalidArgument(f"unknown rendition {name!r}")


def make_video(title: str, seconds: int, rng: random.Random) -> bytes:
    """A reproducible fake video: header, title, then one frame per second of "footage"."""
    if not 1 <= seconds <= VIDEO_BYTES_MAX // FRAME_BYTES - 1:
        raise InvalidArgument("seconds out of range")
    header = MAGIC + len(title.encode()).to_bytes(2, "big") + title.encode()
    return header + rng.randbytes(seconds * FRAME_BYTES)


def transcode(source: bytes, rendition: Rendition) -> bytes:
    """The rendition of ``source``: a header naming it, then every ``step``-th byte."""
    if not source.startswith(MAGIC):
        raise InvalidArgument("not a video this transcoder understands")
    if len(source) > VIDEO_BYTES_MAX:
        raise InvalidArgument(f"videos are at most {VIDEO_BYTES_MAX} bytes")
    return MAGIC + rendition.name.encode().ljust(8, b" ") + source[:: rendition.step]
