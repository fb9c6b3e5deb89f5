"""YouTube from the blocks: upload, transcode, watch, count, search (see README.md).

``python -m examples.youtube`` runs a scripted session; ``run_session`` is the same from code.
"""

from examples.youtube.app import YouTube
from examples.youtube.session import YouTubeReport, run_session

__all__ = ["YouTube", "YouTubeReport", "run_session"]
